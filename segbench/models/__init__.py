"""Built-in architectures (FCN, Fast-SCNN) and the conv blocks they share.

Nothing here imports the registry: the built-in plugin (`segbench.builtin`) imports these modules
lazily and registers them, the same way a third-party plugin would.
"""
