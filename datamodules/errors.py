"""User-facing errors: one line that names the problem and what to do."""

from __future__ import annotations


class MERError(Exception):
    """A problem with the user's input (config, data, fold); printed as one line, exit code 2."""
