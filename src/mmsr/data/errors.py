"""The one error sample IO raises: it names the file and the row."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A malformed sample file or row; the message names the file, row index and id.

    >>> str(DataError("missing answer", path=Path("a.jsonl"), row=3, sample_id="q7"))
    "a.jsonl: row 3 (id 'q7'): missing answer"
    """

    def __init__(
        self,
        reason: str,
        *,
        path: Path | str | None = None,
        row: int | None = None,
        sample_id: str | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.row = row  # 0-based index of the record in the file
        self.sample_id = sample_id
        where = str(path) if path is not None else "<samples>"
        if row is not None:
            where += f": row {row}"
            if sample_id is not None:
                where += f" (id {sample_id!r})"
        super().__init__(f"{where}: {reason}")
