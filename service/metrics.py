"""Prometheus metrics, one registry per app so that several apps can live in one process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class WriterReadings(Protocol):
    """What the record writer reports; it keeps its own counts, read at each scrape."""

    @property
    def spool_depth(self) -> int: ...
    @property
    def queue_depth(self) -> int: ...
    @property
    def dead_lettered(self) -> int: ...
    @property
    def lost(self) -> int: ...


class _WriterCounters(Collector):
    def __init__(self) -> None:
        self.writer: WriterReadings | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        writer = self.writer
        yield CounterMetricFamily(
            "conscience_records_dead_lettered",
            "Records the database refused for their data, kept in the spool's dead-letter file.",
            value=writer.dead_lettered if writer else 0,
        )
        yield CounterMetricFamily(
            "conscience_records_lost",
            "Records neither the database nor the spool's disk could take (each logged at "
            "CRITICAL).",
            value=writer.lost if writer else 0,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "conscience_requests_total", "Requests answered, by endpoint and status.",
            ["endpoint", "status"], registry=self.registry,
        )
        self.verdicts = Counter(
            "conscience_verdicts_total", "Verdicts, by framework and label.",
            ["framework", "verdict"], registry=self.registry,
        )
        self.repairs = Counter(
            "conscience_repairs_total", "Repair outcomes (repaired, refused), by framework.",
            ["framework", "outcome"], registry=self.registry,
        )
        self.unchecked = Counter(
            "conscience_unchecked_total",
            "Answers the judge did not check, by framework, reason (judge_error, "
            "invalid_verdict, answer_too_long, mode_off, shutdown, review_overflow: a monitored "
            "answer no background review had room for) and outcome (sent to the client unchecked, "
            "or refused).",
            ["framework", "reason", "outcome"], registry=self.registry,
        )
        self.topic_checks = Counter(
            "conscience_topic_checks_total",
            "Repair drafts' topic checks, by framework and result (on_topic, off_topic: discarded, "
            "skipped: the backend served no embeddings).",
            ["framework", "result"], registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "conscience_stage_seconds", "Latency of each stage (upstream, judge, repair, total).",
            ["stage"], buckets=_STAGE_BUCKETS, registry=self.registry,
        )
        self.stage_tokens = Counter(
            "conscience_stage_tokens_total",
            "Tokens the conscience spent, by framework, stage (judge, repair) and kind (prompt, "
            "completion); not in the responses' own usage.",
            ["framework", "stage", "kind"], registry=self.registry,
        )
        self.spool_depth = Gauge(
            "conscience_spool_depth", "Records waiting in the spool file for the database.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "conscience_writer_queue_depth", "Records waiting in the writer's queue.",
            registry=self.registry,
        )
        self._writer_counters = _WriterCounters()
        self.registry.register(self._writer_counters)

    def track_writer(self, writer: WriterReadings) -> None:
        self.spool_depth.set_function(lambda: writer.spool_depth)
        self.queue_depth.set_function(lambda: writer.queue_depth)
        self._writer_counters.writer = writer

    def render(self) -> bytes:
        return generate_latest(self.registry)
