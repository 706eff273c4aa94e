"""The background writer: the request path hands records over and never waits for the database.

Records go through an in-memory queue into batched, idempotent inserts. When the database is
down a batch goes to the spool file instead, and a retry loop replays the spool once the
database is back; while it is down new batches go straight to the spool rather than each
waiting out a connection attempt. When the queue is full, records also go to the spool. Shutdown
drains the queue. Nothing accepted by `submit` is lost (DESIGN invariant 2).

`submit` must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from service.store.db import Database
from service.store.ingest import insert_records
from service.store.records import Record
from service.store.spool import Spool

log = logging.getLogger("conscience.store.writer")


class RecordWriter:
    def __init__(
        self,
        db: Database,
        spool_path: Path,
        *,
        batch_size: int,
        flush_interval_s: float,
        retry_interval_s: float,
        queue_size: int,
    ) -> None:
        self._db = db
        self._spool = Spool(spool_path)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._queue_size = queue_size
        # Unbounded so the stop marker (None) always fits; `submit` enforces `queue_size`.
        self._queue: asyncio.Queue[Record | None] = asyncio.Queue()
        self._overflow: list[Record] = []
        self._overflow_ready = asyncio.Event()
        self._db_down = False
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def spool_depth(self) -> int:
        return self._spool.depth

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() + len(self._overflow)

    async def start(self) -> None:
        """Replay what an earlier run left in the spool, then start the background tasks."""
        await self._replay_spool()
        self._tasks = [
            asyncio.create_task(self._drain_queue(), name="record-writer-queue"),
            asyncio.create_task(self._spool_overflow(), name="record-writer-overflow"),
            asyncio.create_task(self._retry_spool(), name="record-writer-retry"),
        ]

    def submit(self, record: Record) -> None:
        try:
            if self._closing.is_set():
                # Late records after shutdown: rare, so the blocking write is acceptable.
                self._spool.append([record])
            elif self._queue.qsize() >= self._queue_size:
                self._overflow.append(record)
                self._overflow_ready.set()
            else:
                self._queue.put_nowait(record)
        except Exception:
            log.exception("could not accept a %s record", record.kind)

    async def aclose(self) -> None:
        """Write everything still queued (to the database, or the spool if it is down)."""
        if self._closing.is_set():
            return
        self._closing.set()
        if not self._tasks:  # never started: keep what was submitted for the next start
            unsent = [item for item in _drain_nowait(self._queue) if item is not None]
            await self._to_spool(unsent + self._overflow)
            self._overflow = []
            return
        drain, overflow, retry = self._tasks
        self._queue.put_nowait(None)
        await drain
        self._overflow_ready.set()
        await overflow
        await retry  # it stops between replays, never in the middle of one
        if self.spool_depth and not self._db_down:
            await self._replay_spool()
        if self.spool_depth:
            log.warning(
                "%d record(s) left in %s for the next start", self.spool_depth, self._spool.path
            )

    async def _drain_queue(self) -> None:
        while True:
            batch, stop = await self._next_batch()
            if batch:
                await self._persist(batch)
            if stop:
                return

    async def _next_batch(self) -> tuple[list[Record], bool]:
        """Up to `batch_size` records, waiting at most `flush_interval_s` after the first."""
        first = await self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = asyncio.get_running_loop().time() + self._flush_interval_s
        while len(batch) < self._batch_size:
            if self._queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    async def _persist(self, batch: list[Record]) -> None:
        if not self._db_down:
            try:
                await self._insert(batch)
                return
            except Exception as exc:
                self._db_down = True
                log.warning(
                    "database unavailable (%s); spooling to %s", _describe(exc), self._spool.path
                )
        await self._to_spool(batch)

    async def _insert(self, batch: Sequence[Record]) -> None:
        refused = await insert_records(self._db, batch)
        if refused:
            await asyncio.to_thread(self._spool.reject, refused)

    async def _to_spool(self, batch: list[Record]) -> None:
        try:
            await asyncio.to_thread(self._spool.append, batch)
        except Exception:  # disk full, or a record that cannot be serialised: nowhere left to go
            log.critical("could not spool %d record(s): they are lost", len(batch), exc_info=True)

    async def _spool_overflow(self) -> None:
        while True:
            await self._overflow_ready.wait()
            self._overflow_ready.clear()
            while self._overflow:
                pending, self._overflow = self._overflow, []
                await self._to_spool(pending)
            if self._closing.is_set():
                return

    async def _retry_spool(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._closing.wait(), self._retry_interval_s)
                return
            except TimeoutError:
                pass
            if self._db_down or self._spool.depth:
                await self._replay_spool()

    async def _replay_spool(self) -> None:
        """Move every spooled record into the database; on an outage keep them for next time."""
        while await asyncio.to_thread(self._spool.claim):
            offset = 0
            try:
                while True:
                    batch, offset = await asyncio.to_thread(
                        self._spool.read_claimed, offset, self._batch_size
                    )
                    if not batch:
                        break
                    await self._insert(batch)
            except Exception as exc:
                # Warn once per outage; the retry loop would otherwise repeat it every interval.
                report = log.debug if self._db_down else log.warning
                report("database unavailable (%s); %d record(s) wait in the spool",
                       _describe(exc), self._spool.depth)
                self._db_down = True
                return
            await asyncio.to_thread(self._spool.release)
            log.info("spool replayed into the database")
        self._db_down = False


def _drain_nowait(queue: asyncio.Queue[Record | None]) -> list[Record | None]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
