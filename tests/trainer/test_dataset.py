from __future__ import annotations

from datetime import UTC, datetime

from service.store.preference import clean_messages
from trainer.nightly.dataset import PreferencePair, split_held_out, to_pairs
from trainer.nightly.select import SelectedTriple


def pair(index: int, chosen: str = "good") -> PreferencePair:
    return PreferencePair(f"id-{index}", [{"role": "user", "content": f"q{index}"}], chosen, "bad")


def test_messages_keep_role_and_text_only() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "name": "alice",
            "content": [
                {"type": "text", "text": "Describe "},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                {"type": "text", "text": "this."},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
    ]
    assert clean_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Describe this."},
        {"role": "assistant", "content": ""},
    ]


def test_pairs_carry_the_triple_text() -> None:
    triple = SelectedTriple(
        id="t1",
        framework="three_laws",
        prompt=[{"role": "user", "content": "hi"}],
        chosen="kind answer",
        rejected="rude answer",
        created_at=datetime.now(UTC),
    )
    [converted] = to_pairs([triple])
    assert converted.as_record() == {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "kind answer"}],
        "rejected": [{"role": "assistant", "content": "rude answer"}],
    }


def test_split_is_deterministic_and_independent_of_order() -> None:
    pairs = [pair(index) for index in range(20)]
    first = split_held_out(pairs, 0.25, seed=7)
    shuffled = split_held_out(list(reversed(pairs)), 0.25, seed=7)
    assert len(first.held_out) == 5 and len(first.train) == 15
    assert {p.triple_id for p in first.held_out} == {p.triple_id for p in shuffled.held_out}
    assert not {p.triple_id for p in first.held_out} & {p.triple_id for p in first.train}
    other_seed = split_held_out(pairs, 0.25, seed=8)
    assert {p.triple_id for p in other_seed.held_out} != {p.triple_id for p in first.held_out}


def test_split_always_leaves_a_pair_to_train() -> None:
    assert len(split_held_out([pair(0), pair(1)], 0.9, seed=0).train) == 1
    assert split_held_out([pair(0)], 0.5, seed=0).held_out == []
    assert split_held_out([pair(0), pair(1)], 0.0, seed=0).held_out == []


def test_content_hash_follows_content_and_split() -> None:
    pairs = [pair(index) for index in range(12)]
    split = split_held_out(pairs, 0.3, seed=1)
    assert split.content_hash == split_held_out(list(pairs), 0.3, seed=1).content_hash
    edited = [pair(0, chosen="better"), *pairs[1:]]
    assert split_held_out(edited, 0.3, seed=1).content_hash != split.content_hash
    assert split_held_out(pairs, 0.3, seed=2).content_hash != split.content_hash
