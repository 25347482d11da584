"""The one error type for bad user input: the CLI turns it into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what is accepted."""
