"""From selected triples to DPO preference pairs: message cleanup, held-out split, content hash."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.store.preference import Message, clean_messages, preference_record
from trainer.nightly.select import SelectedTriple

if TYPE_CHECKING:
    from datasets import Dataset

@dataclass(frozen=True, slots=True)
class PreferencePair:
    triple_id: str
    prompt: list[Message]
    chosen: str
    rejected: str

    def as_record(self) -> dict[str, Any]:
        """TRL's conversational preference format, as the admin export writes it."""
        return preference_record(self.prompt, self.chosen, self.rejected)


@dataclass(frozen=True, slots=True)
class SplitPairs:
    train: list[PreferencePair]
    held_out: list[PreferencePair]

    @property
    def content_hash(self) -> str:
        """SHA-256 of both sides, so a version names exactly what it was trained and gated on."""
        canonical = json.dumps(
            {
                "train": [_hashable(pair) for pair in self.train],
                "held_out": [_hashable(pair) for pair in self.held_out],
            },
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def _hashable(pair: PreferencePair) -> dict[str, Any]:
    return {"id": pair.triple_id, **pair.as_record()}


def to_pairs(triples: Sequence[SelectedTriple]) -> list[PreferencePair]:
    return [
        PreferencePair(
            triple_id=triple.id,
            prompt=clean_messages(triple.prompt),
            chosen=triple.chosen,
            rejected=triple.rejected,
        )
        for triple in triples
    ]


def split_held_out(pairs: Sequence[PreferencePair], fraction: float, seed: int) -> SplitPairs:
    """Hold out `ceil(n * fraction)` pairs (at least one pair always trains).

    Pairs are ranked by a seeded hash of their triple id, so the split depends only on which
    triples were selected, not on their order. Held-out triples are not marked trained: they
    stay available to a later run, whose evaluation rows are again ones no version trained on.
    """
    if fraction <= 0 or len(pairs) < 2:
        return SplitPairs(train=list(pairs), held_out=[])
    held_out_count = min(math.ceil(len(pairs) * fraction), len(pairs) - 1)
    ranked = sorted(
        pairs, key=lambda pair: hashlib.sha256(f"{seed}:{pair.triple_id}".encode()).digest()
    )
    held_out_ids = {pair.triple_id for pair in ranked[:held_out_count]}
    return SplitPairs(
        train=[pair for pair in pairs if pair.triple_id not in held_out_ids],
        held_out=[pair for pair in pairs if pair.triple_id in held_out_ids],
    )


def to_hf_dataset(pairs: Sequence[PreferencePair]) -> Dataset:
    from datasets import Dataset

    return Dataset.from_list([pair.as_record() for pair in pairs])
