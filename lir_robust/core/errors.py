"""The errors a user can fix, at the bottom of the package: every layer raises them, the command line turns each
into one line (the problem and the fix) with exit status 2.

    UserError                     a mistake the user can fix (an option, a path, a folder's state)
    HubError(UserError)           publishing or loading by Hub id cannot go on (unreachable, not found, no token)
"""

from __future__ import annotations

__all__ = ["UserError", "HubError"]


class UserError(Exception):
    """A mistake the user can fix (an option, a path, a folder's state); the message names the problem and the fix."""


class HubError(UserError):
    """Publishing or loading by Hub id cannot go on; the message names the problem and the fix (exit status 2)."""
