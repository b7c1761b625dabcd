"""Run identity: which run ids are valid.

A run id names a run in every store: a file name in :class:`~asyncflow.stores.FileStore`, a key
or a column in others. So it is a plain, short name, checked once by the engine before any store
sees it.
"""

from __future__ import annotations

import re

from ._errors import InvalidRunIdError

__all__ = ["MAX_RUN_ID", "is_run_id", "validate_run_id"]

#: The longest run id: a file name is at most 255 bytes, and ``.corrupt-<n>`` must fit after it.
MAX_RUN_ID = 200
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+=,~-]*")


def is_run_id(text: str) -> bool:
    """Whether ``text`` is a valid run id (see :func:`validate_run_id`)."""
    return len(text) <= MAX_RUN_ID and RUN_ID_PATTERN.fullmatch(text) is not None


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` when it is a safe, plain name: ``<run_id>.json`` names its run file.

    Every run file name ends in ``.json``, while the store's own names start with a dot
    (``.journal``) or end otherwise (``.tmp``, ``.corrupt-<n>``), so no valid id collides with them.

    Raises:
        InvalidRunIdError: empty, too long, a path (a slash or backslash, ``..``), a leading dot, NUL or
            other characters outside ``A-Z a-z 0-9 _ . @ + = , ~ -``.
    """
    if not isinstance(run_id, str):
        raise InvalidRunIdError(
            f"A run id is a string; got {type(run_id).__name__} {run_id!r}.", run_id=str(run_id)
        )
    if is_run_id(run_id):
        return run_id
    if not run_id:
        problem = "is empty"
    elif len(run_id) > MAX_RUN_ID:
        problem = f"is {len(run_id)} characters long, over the limit of {MAX_RUN_ID}"
    elif run_id.startswith("."):
        problem = "starts with a dot (hidden files, '.' and '..' are not run ids)"
    elif "/" in run_id or "\\" in run_id:
        problem = "contains a path separator"
    elif "\x00" in run_id:
        problem = "contains a NUL byte"
    else:
        bad = sorted({c for c in run_id if not RUN_ID_PATTERN.fullmatch("a" + c)})
        problem = f"contains {', '.join(map(repr, bad))}"
    raise InvalidRunIdError(
        f"Run id {run_id[:80]!r} {problem}. A run id names a file of checkpoints: use up to "
        f"{MAX_RUN_ID} of A-Z a-z 0-9 _ . @ + = , ~ - and do not start with a dot, "
        f"e.g. 'doc-42'.",
        run_id=run_id,
    )
