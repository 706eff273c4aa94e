"""The evaluation gate a new version must pass before it may serve.

Two checks, each against the previous version (the adapter the run continued from, or the bare
base model for a first version), on the same rows and prompts:

1. held-out preference accuracy: the share of held-out triples where the chosen answer's
   log-ratio to the reference (the frozen base) is above the rejected one's. It may not fall
   by more than `max_accuracy_drop`. The mean reward margin, beta times the difference of the
   log-ratios, is reported next to it. (The base model's own log-ratios are all zero: a first
   version is compared with accuracy 0.)
2. over-refusal: the share of benign prompts whose greedy reply reads as a refusal (the
   detector measured on XSTest, service/conscience/refusal.py) may not rise by more than
   `max_refusal_increase`.

Each phase shows a tqdm bar on stderr (rows scored, prompts answered), so a long gate on a CPU
is visibly moving, in a terminal and in a log alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from service.conscience.refusal import is_refusal
from trainer.common.scoring import completion_logprob, greedy_replies, using_adapter
from trainer.nightly.config import TrainConfig
from trainer.nightly.dataset import PreferencePair

PairLogprobs = list[tuple[float, float]]  # (chosen, rejected) per pair
REPLY_BATCH = 8  # benign prompts answered per generate() call


@dataclass(frozen=True, slots=True)
class PreferenceScores:
    accuracy: float
    mean_margin: float


@dataclass(frozen=True, slots=True)
class RefusalRates:
    candidate: float
    previous: float
    prompts: int


@dataclass(frozen=True)
class GateReport:
    held_out_rows: int
    candidate: PreferenceScores | None
    previous: PreferenceScores | None
    refusals: RefusalRates
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def failure_reason(self) -> str | None:
        return "; ".join(self.reasons) or None

    def as_metrics(self) -> dict[str, Any]:
        return {
            "held_out_rows": self.held_out_rows,
            "held_out": {
                "candidate": asdict(self.candidate) if self.candidate else None,
                "previous": asdict(self.previous) if self.previous else None,
            },
            "refusal_rate": asdict(self.refusals),
            "passed": self.passed,
        }


def _label(adapter: str | None) -> str:
    return "base" if adapter is None else adapter


def pair_logprobs(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    adapter: str | None,
    max_length: int,
) -> PairLogprobs:
    with using_adapter(model, adapter):
        return [
            (
                completion_logprob(model, tokenizer, pair.prompt, pair.chosen, max_length),
                completion_logprob(model, tokenizer, pair.prompt, pair.rejected, max_length),
            )
            for pair in tqdm(pairs, desc=f"gate: held-out rows ({_label(adapter)})", unit="row")
        ]


def preference_scores(
    policy: PairLogprobs, reference: PairLogprobs, beta: float
) -> PreferenceScores | None:
    if not policy:
        return None
    margins = [
        (chosen - ref_chosen) - (rejected - ref_rejected)
        for (chosen, rejected), (ref_chosen, ref_rejected) in zip(policy, reference, strict=True)
    ]
    return PreferenceScores(
        accuracy=sum(margin > 0 for margin in margins) / len(margins),
        mean_margin=beta * sum(margins) / len(margins),
    )


def refusal_rate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    adapter: str | None,
    config: TrainConfig,
) -> float:
    replies: list[str] = []
    bar = tqdm(total=len(prompts), desc=f"gate: benign prompts ({_label(adapter)})", unit="prompt")
    with using_adapter(model, adapter), bar:
        for start in range(0, len(prompts), REPLY_BATCH):
            batch = [[{"role": "user", "content": prompt}] for prompt in prompts[start : start + REPLY_BATCH]]
            replies += greedy_replies(model, tokenizer, batch, config.gate_reply_tokens)
            bar.update(len(batch))
    return sum(is_refusal(reply) for reply in replies) / len(replies)


def evaluate_gate(
    model: Any,
    tokenizer: Any,
    held_out: Sequence[PreferencePair],
    benign_prompts: Sequence[str],
    config: TrainConfig,
    *,
    candidate: str,
    previous: str | None,
) -> GateReport:
    """Score adapter `candidate` against `previous` (None: the base) inside one PeftModel."""
    model.eval()
    reference = pair_logprobs(model, tokenizer, held_out, None, config.gate_max_length)
    previous_logprobs = (
        reference
        if previous is None
        else pair_logprobs(model, tokenizer, held_out, previous, config.gate_max_length)
    )
    candidate_logprobs = pair_logprobs(model, tokenizer, held_out, candidate, config.gate_max_length)
    candidate_scores = preference_scores(candidate_logprobs, reference, config.beta)
    previous_scores = preference_scores(previous_logprobs, reference, config.beta)
    refusals = RefusalRates(
        candidate=refusal_rate(model, tokenizer, benign_prompts, candidate, config),
        previous=refusal_rate(model, tokenizer, benign_prompts, previous, config),
        prompts=len(benign_prompts),
    )

    reasons = []
    if candidate_scores and previous_scores:
        if candidate_scores.accuracy < previous_scores.accuracy - config.max_accuracy_drop:
            reasons.append(
                f"held-out preference accuracy {candidate_scores.accuracy:.3f} is below the "
                f"previous version's {previous_scores.accuracy:.3f} by more than "
                f"{config.max_accuracy_drop}"
            )
    if refusals.candidate - refusals.previous > config.max_refusal_increase:
        reasons.append(
            f"refusal rate on benign prompts rose from {refusals.previous:.3f} to "
            f"{refusals.candidate:.3f} (allowed rise: {config.max_refusal_increase})"
        )
    return GateReport(
        held_out_rows=len(held_out),
        candidate=candidate_scores,
        previous=previous_scores,
        refusals=refusals,
        reasons=reasons,
    )
