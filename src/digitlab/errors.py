"""One exception type for every user-facing failure.

The CLI catches it and prints its message without a traceback; anything else is a bug.
"""


class DigitlabError(Exception):
    """A problem the user can fix: bad name, missing file, corrupt data, wrong checkpoint."""


def unknown_name(kind: str, name: str, valid: list[str]) -> DigitlabError:
    """The error for an unknown model/dataset/preset/optimizer name, listing the valid ones."""
    return DigitlabError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(valid))}")
