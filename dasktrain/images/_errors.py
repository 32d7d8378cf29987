"""The messages of the errors policy: what cannot be read is raised or skipped, never lost."""

from __future__ import annotations

import warnings
from collections import Counter
from typing import TYPE_CHECKING

from ..exceptions import ImageReadError, SkippedFilesWarning

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_NAMED = 10  # files named in one error message


def reason(exc: BaseException) -> str:
    """``"<type>: <message>"`` of an exception, as each skipped file's reason."""
    return f"{type(exc).__name__}: {exc}"


def unlisted_error(unlisted: Sequence[tuple[str, str]]) -> ImageReadError:
    """The error for folders that could not be listed (their images would vanish)."""
    shown = "\n  ".join(f"{p}: {r}" for p, r in unlisted[:MAX_NAMED])
    return ImageReadError(
        f"{len(unlisted)} folder(s) could not be listed, so their images would be missing:\n"
        f"  {shown}\nFix the permissions, or pass errors='skip' to leave them out (they are "
        "then listed in ImageSet.skipped)."
    )


def read_error(bad, *, when):
    """The error naming the files (up to ``MAX_NAMED``) that could not be opened/decoded."""
    shown = "\n  ".join(f"{p}: {r}" for p, r in bad[:MAX_NAMED])
    more = f"\n  ... and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
    return ImageReadError(
        f"{len(bad)} file(s) could not be {when}:\n  {shown}{more}\n"
        "Fix or remove them, or pass errors='skip' to leave them out "
        "(they are then listed in ImageSet.skipped)."
    )


def warn_skipped(skipped):
    """One SkippedFilesWarning counting the skipped files by reason (``stacklevel``: the
    caller of ``read_images``)."""
    if skipped:
        reasons = Counter(r.split(":", 1)[0] for _, r in skipped)
        warnings.warn(
            SkippedFilesWarning(
                f"{len(skipped)} unreadable file(s) were left out "
                f"({', '.join(f'{k}: {v}' for k, v in reasons.most_common())}); "
                "see ImageSet.skipped for each path and reason."
            ),
            stacklevel=3,
        )


def check_any_left(paths, skipped):
    """Raise when every file was skipped: an empty set is never what the user asked for."""
    if not paths:
        raise ImageReadError(
            f"none of the files could be read ({len(skipped)} skipped); first reasons: "
            f"{skipped[:3]!r}."
        )
