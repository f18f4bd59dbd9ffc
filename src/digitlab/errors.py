"""One exception type for every user-facing failure.

The CLI catches it and prints its message without a traceback; anything else is a bug.
"""

import difflib


class DigitlabError(Exception):
    """A problem the user can fix: bad name, missing file, corrupt data, wrong checkpoint."""


def unknown_name(kind: str, name: str, valid: list[str]) -> DigitlabError:
    """The error for an unknown model/dataset/preset/optimizer name: the closest valid name, if one is
    close (a typo), then all of them."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return DigitlabError(f"unknown {kind} {name!r}{hint}; choose one of: {', '.join(sorted(valid))}")
