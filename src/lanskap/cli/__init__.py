"""The ``lanskap`` command: thin Typer shells over the core functions."""
