"""The append-only JSONL file that holds records while the database cannot take them.

Crash safety comes from three rules: every append is flushed and fsynced before it counts; a
replay first renames the spool to `<name>.replaying` (so new appends go to a fresh file and a
crash mid-replay leaves the claimed file to be replayed again — inserts are idempotent); the
claimed file is deleted only after every record in it is in the database. Records the database
refuses for good (bad data, not an outage) go to `<name>.rejected` with the reason, never
silently away.

All methods block on disk I/O: call them from a worker thread on the request path.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import orjson

from service.store.records import Record, record_from_json

log = logging.getLogger("conscience.store.spool")


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.replaying_path = path.with_name(path.name + ".replaying")
        self.rejected_path = path.with_name(path.name + ".rejected")
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._end_torn_line(path)
        self._appended = _count_lines(path)
        self._claimed = _count_lines(self.replaying_path)

    @property
    def depth(self) -> int:
        """Records waiting in the spool and in a claimed (replaying) file."""
        return self._appended + self._claimed

    def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        payload = b"".join(orjson.dumps(record.to_json()) + b"\n" for record in records)
        with self._lock:
            _append_durably(self.path, payload)
            self._appended += len(records)

    def claim(self) -> bool:
        """Make `replaying_path` hold the records to replay next; False when there are none.

        A claimed file left by an earlier failed (or crashed) replay is replayed again before
        the spool is claimed, so a rename can never overwrite records.
        """
        with self._lock:
            if self.replaying_path.exists():
                return True
            if self._appended == 0:
                return False
            os.replace(self.path, self.replaying_path)
            fsync_path(self.path.parent)
            self._claimed, self._appended = self._appended, 0
            return True

    def read_claimed(self, offset: int, batch_size: int) -> tuple[list[Record], int]:
        """Up to `batch_size` claimed records from byte `offset`, and the offset after them.

        Lines that do not parse go to the rejected file. An empty batch means the end.
        """
        batch: list[Record] = []
        with self.replaying_path.open("rb") as lines:
            lines.seek(offset)
            while len(batch) < batch_size and (line := lines.readline()):
                if not line.strip():
                    continue
                try:
                    batch.append(record_from_json(orjson.loads(line)))
                except (ValueError, TypeError, KeyError) as exc:
                    self._reject_line(line, f"unreadable spool line: {exc}")
            return batch, lines.tell()

    def release(self) -> None:
        """Forget the claimed file: every record in it is now in the database (or rejected)."""
        with self._lock:
            self.replaying_path.unlink(missing_ok=True)
            fsync_path(self.path.parent)
            self._claimed = 0

    def reject(self, rejected: Sequence[tuple[Record, str]]) -> None:
        """Keep records the database refuses for good, with the reason, for an operator."""
        payload = b"".join(
            orjson.dumps({"reason": reason, "record": record.to_json()}) + b"\n"
            for record, reason in rejected
        )
        with self._lock:
            _append_durably(self.rejected_path, payload)
        log.error(
            "%d record(s) refused by the database, kept in %s", len(rejected), self.rejected_path
        )

    def _reject_line(self, line: bytes, reason: str) -> None:
        payload = orjson.dumps({"reason": reason, "line": line.decode("utf-8", "replace")}) + b"\n"
        with self._lock:
            _append_durably(self.rejected_path, payload)
        log.error("%s; kept in %s", reason, self.rejected_path)

    @staticmethod
    def _end_torn_line(path: Path) -> None:
        # A crash mid-append can leave a last line without its newline; without this the next
        # append would glue a good record onto it and both would be unreadable.
        if not path.exists() or path.stat().st_size == 0:
            return
        with path.open("rb") as spool:
            spool.seek(-1, os.SEEK_END)
            if spool.read(1) == b"\n":
                return
        _append_durably(path, b"\n")


def _append_durably(path: Path, payload: bytes) -> None:
    with path.open("ab") as spool:
        spool.write(payload)
        spool.flush()
        os.fsync(spool.fileno())


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries (a rename is durable only once its directory is)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as lines:
        return sum(1 for line in lines if line.strip())
