"""The one builder of the conscience stack: Judge, Repairer, Reviewer and the pipeline.

Every consumer builds it here (the proxy's app.py, `conscience eval`, `conscience finetune`,
bench/), so what evaluation measures and what fine-tuning reviews with is exactly what the
proxy runs: the same knobs reach the same classes. `ConscienceKnobs` are the settings the
stack reads; `from_settings` takes them from the proxy's `Settings`, and a consumer with its
own config (finetune) overrides the few it owns, the rest keeping the proxy's defaults.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from typing import Any

from service.conscience.admission import ReviewBudget
from service.conscience.judge import Judge
from service.conscience.pipeline import ConsciencePipeline, RecordSink
from service.conscience.probe import LatentBackend
from service.conscience.repair import Repairer
from service.conscience.review import RepairBounds, Reviewer
from service.conscience.steering import SteerableBackend, steering_from_probe
from service.conscience.thresholds import SHIPPED_PATH, ThresholdTable, configured_thresholds, load_thresholds
from service.conscience.topic import TopicEmbedder
from service.core.backend import Backend
from service.metrics import Metrics
from service.settings import RepairStrategy, Settings
from service.shutdown import GracefulShutdown
from service.tracing import traced_judge, traced_repairer, traced_sink

log = logging.getLogger("conscience.stack")


def _proxy_default(name: str) -> Any:
    return Settings.setting_fields()[Settings.path_of(name)].default


@dataclass(frozen=True, slots=True)
class ConscienceKnobs:
    """The settings of the judge → repair → judge loop; field names are the settings' flat
    names (`judge_max_answer_chars` is `settings.judge.max_answer_chars`)."""

    threshold: float = _proxy_default("threshold")
    # Not a setting: read from `thresholds_path` (default: the shipped file), or empty when an
    # explicitly set `threshold` overrides calibration (service/conscience/thresholds.py).
    calibrated_thresholds: ThresholdTable = field(default_factory=lambda: load_thresholds(SHIPPED_PATH))
    judge_max_answer_chars: int = _proxy_default("judge_max_answer_chars")
    judge_window_overlap_chars: int = _proxy_default("judge_window_overlap_chars")
    judge_max_windows: int = _proxy_default("judge_max_windows")
    reasoned_max_tokens: int = _proxy_default("reasoned_max_tokens")
    repair_max_tokens: int = _proxy_default("repair_max_tokens")
    repair_temperature: float = _proxy_default("repair_temperature")
    repair_candidates: int = _proxy_default("repair_candidates")
    repair_strategy: RepairStrategy = _proxy_default("repair_strategy")
    repair_max_overlap: float = _proxy_default("repair_max_overlap")
    repair_max_draft_tokens: int = _proxy_default("repair_max_draft_tokens")
    repair_max_seconds: float = _proxy_default("repair_max_seconds")
    repair_frequency_penalty: float = _proxy_default("repair_frequency_penalty")
    repair_draft_window_chars: int = _proxy_default("repair_draft_window_chars")
    repair_min_topic_similarity: float = _proxy_default("repair_min_topic_similarity")
    repair_steering_alpha: float = _proxy_default("repair_steering_alpha")
    refusal_message: str = _proxy_default("refusal_message")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ConscienceKnobs:
        """Raises ThresholdsError when the thresholds file cannot be read (start-up checks it
        first: service/startup.py)."""
        knobs = cls(
            calibrated_thresholds=configured_thresholds(
                settings.judge.thresholds_path, overridden="threshold" in settings.judge.model_fields_set
            ),
            **{
                knob.name: settings.value_at(Settings.path_of(knob.name))
                for knob in fields(cls) if knob.name in Settings.flat_names.values()
            },
        )
        return replace(knobs, **overrides)


def build_judge(backend: Backend, knobs: ConscienceKnobs) -> Judge:
    return Judge(
        backend,
        threshold=knobs.threshold,
        calibrated=knobs.calibrated_thresholds,
        max_answer_chars=knobs.judge_max_answer_chars,
        reasoned_max_tokens=knobs.reasoned_max_tokens,
        window_overlap_chars=knobs.judge_window_overlap_chars,
        max_windows=knobs.judge_max_windows,
    )


def repair_backend(backend: Backend, knobs: ConscienceKnobs) -> Backend:
    """What repairs draft through: with `repair_steering_alpha` above 0, a view of `backend`
    steered along its latent probe's harm direction (service/conscience/steering.py) when it can
    steer and has a probe (the embedded engine); else `backend` itself (steering off)."""
    if knobs.repair_steering_alpha <= 0:
        return backend
    probe = backend.probe if isinstance(backend, LatentBackend) else None
    if not isinstance(backend, SteerableBackend) or probe is None:
        log.warning("repair_steering_alpha is set, but the backend cannot steer (the embedded engine "
                    "with a latent probe can): repairs are drafted unsteered")
        return backend
    return backend.steered(steering_from_probe(probe, knobs.repair_steering_alpha))


def build_repairer(backend: Backend, knobs: ConscienceKnobs) -> Repairer:
    """The repairer, drafting through `repair_backend` (the judge reads `backend` unsteered)."""
    return Repairer(
        repair_backend(backend, knobs),
        max_tokens=knobs.repair_max_tokens,
        max_answer_chars=knobs.judge_max_answer_chars,
        temperature=knobs.repair_temperature,
        candidates=knobs.repair_candidates,
        strategy=knobs.repair_strategy,
        frequency_penalty=knobs.repair_frequency_penalty,
    )


def build_reviewer(backend: Backend, knobs: ConscienceKnobs, *, repairer: Repairer | None = None) -> Reviewer:
    """`repairer`: one of the caller's own (bench/steering.py's seeded drafts); default
    `build_repairer`'s."""
    return Reviewer(
        traced_judge(build_judge(backend, knobs)),
        traced_repairer(repairer or build_repairer(backend, knobs)),
        knobs.refusal_message,
        max_overlap=knobs.repair_max_overlap,
        bounds=RepairBounds(
            max_draft_tokens=knobs.repair_max_draft_tokens, max_seconds=knobs.repair_max_seconds, race=True,
            draft_window_chars=knobs.repair_draft_window_chars,
        ),
        topic=TopicEmbedder(backend, min_similarity=knobs.repair_min_topic_similarity),
    )


def build_pipeline(
    settings: Settings, backend: Backend, sink: RecordSink, metrics: Metrics,
    shutdown: GracefulShutdown | None = None,
) -> ConsciencePipeline:
    """The proxy's pipeline: the reviewer, its admission budget, the record sink; `shutdown`:
    the server's, whose end of a request or review is recorded as such."""
    budget = ReviewBudget(settings.limits.max_concurrent_reviews, settings.limits.max_pending_monitor_reviews)
    reviewer = build_reviewer(backend, ConscienceKnobs.from_settings(settings))
    return ConsciencePipeline(reviewer, traced_sink(sink), metrics, budget, shutdown)
