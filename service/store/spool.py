"""The append-only JSONL file that holds records while the database cannot take them.

Crash safety comes from three rules: every append is flushed and fsynced before it counts; a
replay first renames the spool to `<name>.replaying` (so new appends go to a fresh file and a
crash mid-replay leaves the claimed file to be replayed again — inserts are idempotent); the
claimed file is deleted only after every record in it is in the database. Records the database
refuses for their data, and lines that do not parse, go to the dead letter `<name>.dead.jsonl`
with the reason, never silently away (a dead-letter table would refuse them the same way).

An append that fails (a full disk) is cut back off the file and raised: no torn line is left
for the next append to glue onto, and `depth` stays the number of records really on disk.
Every file is created 0600: records hold prompts and answers.

All methods block on disk I/O: call them from a worker thread on the request path.

One file, one process: `claim_slot` gives each writer the first of `<spool>`, `<spool>.1`,
`<spool>.2`, ... whose lock file (`<file>.lock`) it can hold with an exclusive `flock`, for its
whole life (several `serve --workers`, or replicas sharing a volume, never append to one file).
The kernel drops the lock when its process ends, however it ends, so `orphans` finds the spool
files of processes that are gone: a live writer takes each one's lock and replays it.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from service.store.records import Record, record_from_json

log = logging.getLogger("conscience.store.spool")

FILE_MODE = 0o600


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.replaying_path = path.with_name(path.name + ".replaying")
        self.dead_letter_path = path.with_name(path.name + ".dead.jsonl")
        self.dead_lettered = 0  # records set aside by this process
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
        payload = b"".join(_dumps(record.to_json()) for record in records)
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

        Lines that do not parse go to the dead letter. An empty batch means the end.
        """
        batch: list[Record] = []
        with self.replaying_path.open("rb") as lines:
            lines.seek(offset)
            while len(batch) < batch_size and (line := lines.readline()):
                if not line.strip():
                    continue
                try:
                    batch.append(record_from_json(_loads(line)))
                except (ValueError, TypeError, KeyError) as exc:
                    reason = f"unreadable spool line: {exc}"
                    self._set_aside(
                        [{"reason": reason, "line": line.decode("utf-8", "replace")}], reason
                    )
            return batch, lines.tell()

    def release(self) -> None:
        """Forget the claimed file: every record in it is now in the database (or dead letter)."""
        with self._lock:
            self.replaying_path.unlink(missing_ok=True)
            fsync_path(self.path.parent)
            self._claimed = 0

    def dead_letter(self, refused: Sequence[tuple[Record, str]]) -> None:
        """Keep records the database refuses for good, with the reason, for an operator."""
        self._set_aside(
            [{"reason": reason, "record": record.to_json()} for record, reason in refused],
            "refused by the database",
        )

    def _set_aside(self, entries: list[dict[str, Any]], why: str) -> None:
        payload = b"".join(_dumps(entry) for entry in entries)
        with self._lock:
            _append_durably(self.dead_letter_path, payload)
            self.dead_lettered += len(entries)
        log.error("%d record(s) %s, kept in %s", len(entries), why, self.dead_letter_path)

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


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def try_lock(path: Path) -> int | None:
    """A descriptor holding `path`'s exclusive lock, or None while another process holds it.
    (flock locks belong to an open file: a second open in the same process is refused too.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def unlock(descriptor: int) -> None:
    os.close(descriptor)  # closing the last descriptor of the open file releases the lock


def claim_slot(base: Path) -> tuple[Path, int]:
    """This process's own spool file, the first free of `base`, `base.1`, `base.2`, ..., and
    the descriptor that holds it (release it with `unlock`)."""
    for number in itertools.count():
        path = base if number == 0 else base.with_name(f"{base.name}.{number}")
        descriptor = try_lock(path)
        if descriptor is not None:
            return path, descriptor
    raise AssertionError("unreachable")


def orphans(base: Path, own: Path) -> Iterator[tuple[Path, int]]:
    """Spool files of `base`'s family with records in them and no live owner, each with the
    lock this process now holds on it (the caller replays it, then unlocks)."""
    pattern = re.compile(rf"{re.escape(base.name)}(\.\d+)?")
    try:
        names = os.listdir(base.parent)
    except FileNotFoundError:
        return
    found = {
        name.removesuffix(".replaying") for name in names
        if pattern.fullmatch(name.removesuffix(".replaying"))
    }
    for name in sorted(found):
        path = base.with_name(name)
        if path == own or not _has_records(path):
            continue
        descriptor = try_lock(path)
        if descriptor is not None:
            yield path, descriptor


def _has_records(path: Path) -> bool:
    replaying = path.with_name(path.name + ".replaying")
    return any(p.exists() and p.stat().st_size > 0 for p in (path, replaying))


def _dumps(entry: dict[str, Any]) -> bytes:
    """One JSON line. Lone surrogates (JSON requests may carry them as escapes) are kept as
    escapes by the standard library where orjson refuses them."""
    try:
        return orjson.dumps(entry) + b"\n"
    except TypeError:
        return json.dumps(entry, ensure_ascii=True).encode() + b"\n"


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def _append_durably(path: Path, payload: bytes) -> None:
    """Append and fsync `payload`, all of it or (on failure, cut back off) none of it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        start = os.lseek(descriptor, 0, os.SEEK_END)
        try:
            written = 0
            while written < len(payload):
                written += os.write(descriptor, payload[written:])
            os.fsync(descriptor)
        except OSError:
            os.ftruncate(descriptor, start)
            raise
    finally:
        os.close(descriptor)


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
