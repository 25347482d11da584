"""The version, apart from the package root so every layer can stamp it without importing the facade."""

__version__ = "0.1.0"
