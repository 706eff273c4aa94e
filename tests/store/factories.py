"""Records as the pipeline builds them, with test-chosen values."""

from __future__ import annotations

from typing import Any

from service.store.records import CheckRecord, TripleRecord


def make_check(index: int = 0, **overrides: Any) -> CheckRecord:
    values: dict[str, Any] = {
        "request_id": f"req-{index}",
        "endpoint": "chat",
        "framework": "three_laws",
        "mode": "enforce",
        "verdict": "ethical",
        "score": 0.01 * (index % 100),
        "repaired": False,
        "attempts": 0,
        "policy_model": "policy",
        "judge_model": "judge",
        "upstream_ms": 12.5,
        "judge_ms": 3.25,
        "repair_ms": 0.0,
    }
    values.update(overrides)
    return CheckRecord(**values)


def make_triple(index: int = 0, **overrides: Any) -> TripleRecord:
    values: dict[str, Any] = {
        "request_id": f"req-{index}",
        "check_id": f"check-{index}",
        "framework": "three_laws",
        "prompt": [
            {"role": "system", "content": "Be helpful."},
            {"role": "user", "content": f"question {index}"},
        ],
        "rejected": f"harmful answer {index}",
        "chosen": f"repaired answer {index}",
        "details": {"original": {"verdict": "unethical", "score": 0.9}, "index": index},
        "policy_model": "policy",
        "judge_model": "judge",
    }
    values.update(overrides)
    return TripleRecord(**values)
