"""Errors a user can cause and fix: the CLI prints them as one line and exits non-zero."""


class UserError(ValueError):
    """Bad input (option, file, shape). The message is one line naming the problem."""
