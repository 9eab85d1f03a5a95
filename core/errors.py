"""Errors meant for users: caught at CLI and HTTP boundaries and shown as one clear message, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix (a file, a flag, a config value). `exit_code` follows argparse's 2 for usage."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
