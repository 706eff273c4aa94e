"""The conscience step of fine-tuning: the policy answers probes, the frozen base reviews them.

The review is the proxy's own (judge → repair → judge, service/conscience/review.py) over the
in-process backend, so a pair found here is exactly a triple the proxy would have logged for
the same answer: chosen = the accepted repair, rejected = the policy's answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.conscience.review import Reviewer, ReviewPolicy
from service.core.backend import Backend
from service.store.preference import Message


@dataclass(frozen=True, slots=True)
class FoundPair:
    prompt: list[Message]
    chosen: str
    rejected: str


@dataclass
class Findings:
    answers: int = 0
    flagged: int = 0
    unchecked: int = 0  # the judge failed on the answer
    pairs: list[FoundPair] = field(default_factory=list)
    # Repair drafts thrown away, by reason: "judge" (flagged again), "refusal", "empty".
    discarded_drafts: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ProbeSettings:
    policy_model: str
    max_tokens: int
    temperature: float


async def probe_policy(
    backend: Backend,
    reviewer: Reviewer,
    review_policy: ReviewPolicy,
    probes: Sequence[list[Message]],
    settings: ProbeSettings,
    seed: int,
) -> Findings:
    """One answer per probe from the policy, each reviewed by the frozen base."""
    findings = Findings()
    for number, probe in enumerate(probes):
        response = await backend.chat(
            {
                "model": settings.policy_model,
                "messages": probe,
                "max_tokens": settings.max_tokens,
                "temperature": settings.temperature,
                "seed": seed + number,
            }
        )
        answer = (response["choices"][0]["message"].get("content") or "").strip()
        findings.answers += 1
        if not answer:
            continue  # nothing to judge, nothing to prefer a repair over
        review = await reviewer.review(review_policy, list(probe), answer)
        if review.original is None:
            findings.unchecked += 1
        elif review.original.flagged:
            findings.flagged += 1
            findings.discarded_drafts.update(draft["reason"] for draft in review.rejected_drafts)
            if review.repaired:
                findings.pairs.append(FoundPair(list(probe), review.final_text, answer))
    return findings
