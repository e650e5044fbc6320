"""Errors a user can cause and fix: the command line prints their message alone, no traceback.

Raise a ``UserError`` (or a subclass) for anything the person running agentclone
did: a bad recipe key, an unknown name, a missing file, a malformed record. The
message names the file, the key and the fix in one line.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the CLI prints ``error: <message>`` and exits with status 2."""
