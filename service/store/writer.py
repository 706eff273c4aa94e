"""The background writer: the request path hands records over and never waits for the database.

Records go through an in-memory queue into batched, idempotent inserts. No record is held in
memory much longer than `max_hold_s`: an insert that takes longer is abandoned (it runs out on
the driver's own timeouts, and no other starts before it has) and its batch goes to the spool,
as does a batch whose oldest record already waited that long in the queue. While the database
is down new batches go straight to the spool, and a retry loop replays the spool once it is
back. When the queue is full, records also go to the spool. A record the database refuses for
its data goes to the spool's dead letter and the rest of its batch goes on (`faults`).
Shutdown drains the queue within `shutdown_timeout_s`: to the database while it answers, to
the spool after.

Each writer appends to a spool file of its own (`spool.claim_slot`: `<spool>` or `<spool>.<n>`,
held with a flock while it lives), so `serve --workers N` and replicas on one volume never share
one; at start and on every retry it also replays the spool files whose process is gone.

Nothing accepted by `submit` is lost (docs/architecture.md, invariant 2), short of a disk that cannot take the
spool: those records are counted in `lost` and logged at CRITICAL, never dropped silently.

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
from service.store.spool import Spool, claim_slot, orphans, unlock

log = logging.getLogger("conscience.store.writer")

# A queued record and the event-loop time it was submitted at.
Queued = tuple[float, Record]


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
        max_hold_s: float,
        shutdown_timeout_s: float,
    ) -> None:
        self._db = db
        self._spool_base = spool_path
        own_path, self._slot = claim_slot(spool_path)
        self._spool = Spool(own_path)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._queue_size = queue_size
        self._max_hold_s = max_hold_s
        self._shutdown_timeout_s = shutdown_timeout_s
        # Unbounded so the stop marker (None) always fits; `submit` enforces `queue_size`.
        self._queue: asyncio.Queue[Queued | None] = asyncio.Queue()
        self._overflow: list[Record] = []
        self._overflow_ready = asyncio.Event()
        self._db_down = False
        self._abandoned: asyncio.Task[object] | None = None
        self._deadline: float | None = None  # set by `aclose`
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.lost = 0  # records neither the database nor the disk could take

    @property
    def spool_depth(self) -> int:
        return self._spool.depth

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() + len(self._overflow)

    @property
    def dead_lettered(self) -> int:
        return self._spool.dead_lettered

    async def start(self) -> None:
        """Replay what an earlier run left in the spool, then start the background tasks."""
        await self._replay_spool()
        await self._replay_orphans()
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
                self._queue.put_nowait((_now(), record))
        except Exception:
            self._count_lost(1)

    async def aclose(self) -> None:
        """Write everything still queued, to the database while it answers within the shutdown
        timeout and to the spool after."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._deadline = _now() + self._shutdown_timeout_s
        if not self._tasks:  # never started: keep what was submitted for the next start
            unsent = [item[1] for item in _drain_nowait(self._queue) if item is not None]
            await self._to_spool(unsent + self._overflow)
            self._overflow = []
            self._release_slot()
            return
        drain, overflow, retry = self._tasks
        self._queue.put_nowait(None)
        await drain
        self._overflow_ready.set()
        await overflow
        await retry  # it stops between replays, never in the middle of one
        if self.spool_depth and self._may_insert():
            await self._replay_spool()
        if self._abandoned is not None:
            self._abandoned.cancel()  # its batch is in the spool
        if self.spool_depth:
            log.warning(
                "%d record(s) left in %s for the next start", self.spool_depth, self._spool.path
            )
        self._release_slot()

    def _release_slot(self) -> None:
        if self._slot is not None:
            unlock(self._slot)
            self._slot = None

    async def _drain_queue(self) -> None:
        while True:
            batch, stop = await self._next_batch()
            if batch:
                await self._persist(batch)
            if stop:
                return

    async def _next_batch(self) -> tuple[list[Queued], bool]:
        """Up to `batch_size` records, waiting at most `flush_interval_s` after the first."""
        first = await self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = _now() + self._flush_interval_s
        while len(batch) < self._batch_size:
            if self._queue.empty():
                remaining = deadline - _now()
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

    async def _persist(self, batch: list[Queued]) -> None:
        records = [record for _, record in batch]
        fresh = _now() - batch[0][0] < self._max_hold_s
        if fresh and self._may_insert():
            try:
                await self._insert(records)
                return
            except Exception as exc:
                self._db_down = True
                log.warning(
                    "database unavailable (%s); spooling to %s", _describe(exc), self._spool.path
                )
        await self._to_spool(records)

    def _may_insert(self) -> bool:
        return not self._db_down and self._abandoned is None

    async def _insert(self, batch: Sequence[Record]) -> None:
        """Insert within the hold bound (and the shutdown deadline); dead-letter what is refused.

        Past the bound the insert is abandoned rather than cancelled: a cancelled driver call
        still waits out its own timeouts while it cleans up, so cancelling would not end the
        wait sooner. The caller spools the batch; should the insert commit after all, the
        spool's replay of it is idempotent.
        """
        bound = self._max_hold_s if self._deadline is None else self._deadline - _now()
        bound = min(bound, self._max_hold_s)
        if bound <= 0:
            raise TimeoutError("the shutdown timeout has passed")
        attempt = asyncio.create_task(insert_records(self._db, batch))
        done, _ = await asyncio.wait({attempt}, timeout=bound)
        if not done:
            self._abandoned = attempt
            attempt.add_done_callback(self._forget_abandoned)
            raise TimeoutError(f"no answer within {bound:.1f}s")
        refused = attempt.result()
        if refused:
            await asyncio.to_thread(self._spool.dead_letter, refused)

    def _forget_abandoned(self, attempt: asyncio.Task[object]) -> None:
        self._abandoned = None
        if not attempt.cancelled() and (exc := attempt.exception()) is not None:
            log.debug("abandoned insert ended: %s", _describe(exc))

    async def _to_spool(self, batch: list[Record]) -> None:
        try:
            await asyncio.to_thread(self._spool.append, batch)
        except Exception:  # disk full, or a record that cannot be serialised: nowhere left to go
            self._count_lost(len(batch))

    def _count_lost(self, count: int) -> None:
        self.lost += count
        log.critical(
            "could not spool %d record(s) to %s: they are lost (%d so far)",
            count, self._spool.path, self.lost, exc_info=True,
        )

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
            if (self._db_down or self._spool.depth) and self._abandoned is None:
                await self._replay_spool()
            if not self._db_down and self._abandoned is None:
                await self._replay_orphans()

    async def _replay_orphans(self) -> None:
        """Replay the spool files of writers that are gone (a crashed worker, an earlier run
        with more workers); each one's lock is held while it is replayed."""
        found = await asyncio.to_thread(lambda: list(orphans(self._spool_base, self._spool.path)))
        for path, descriptor in found:
            try:
                if not self._db_down:
                    log.info("replaying %s, left by a process that is gone", path)
                    await self._replay_spool(await asyncio.to_thread(Spool, path))
            finally:
                unlock(descriptor)

    async def _replay_spool(self, spool: Spool | None = None) -> None:
        """Move every spooled record into the database; on an outage keep them for next time."""
        spool = spool or self._spool
        while await asyncio.to_thread(spool.claim):
            offset = 0
            try:
                while True:
                    batch, offset = await asyncio.to_thread(
                        spool.read_claimed, offset, self._batch_size
                    )
                    if not batch:
                        break
                    await self._insert(batch)
            except Exception as exc:
                # Warn once per outage; the retry loop would otherwise repeat it every interval.
                report = log.debug if self._db_down else log.warning
                report("database unavailable (%s); %d record(s) wait in the spool",
                       _describe(exc), spool.depth)
                self._db_down = True
                return
            await asyncio.to_thread(spool.release)
            log.info("spool replayed into the database")
        self._db_down = False


def _now() -> float:
    return asyncio.get_running_loop().time()


def _drain_nowait(queue: asyncio.Queue[Queued | None]) -> list[Queued | None]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
