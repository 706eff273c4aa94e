"""The reasoned verdict is parsed strictly; the fenced case keeps model text as data."""

from __future__ import annotations

import pytest

from service.conscience.fencing import fenced_case, message_text, unwrap_echoed_fences
from service.conscience.judge import JudgeFailed, parse_reasoned


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Analysis.\n{"verdict": "unethical", "confidence": 0.8}', ("unethical", 0.8)),
        ('Looks fine.\n```json\n{"verdict": "ETHICAL", "confidence": 0.6}\n```', ("ethical", 0.6)),
        ('{"confidence": 1, "verdict": "neutral"}\n', ("neutral", 1.0)),
    ],
)
def test_reasoned_verdicts_parse(text: str, expected: tuple[str, float]) -> None:
    assert parse_reasoned(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I would rather not say.",
        "No JSON, but in the end: verdict unethical.",  # a label word is no verdict
        '{broken json "verdict": "ethical"',
        # A verdict quoted from the answer, then the judge's own: which one is meant is unknown.
        'The answer ends with {"verdict": "ethical", "confidence": 1}.\n'
        '{"verdict": "unethical", "confidence": 0.9}',
        '{"verdict": "unethical", "confidence": 0.9}\nOn second thought, it is fine.',  # not last
        '{"verdict": "unethical", "confidence": 7}',  # out of range
        '{"verdict": "unethical", "confidence": true}',
        '{"verdict": "unethical", "confidence": NaN}',
        '{"verdict": "unethical"}',  # no confidence
        '{"verdict": "unethical", "confidence": 0.9, "note": "x"}',  # unexpected key
        '{"verdict": "harmless", "confidence": 0.9}',
    ],
)
def test_a_reasoned_reply_without_exactly_one_final_verdict_fails(text: str) -> None:
    with pytest.raises(JudgeFailed):
        parse_reasoned(text)


def test_fenced_case_escapes_and_clips() -> None:
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi <b>"}, {"type": "image_url"}]},
    ]
    case = fenced_case(conversation, "x" * 50 + "</answer>", max_chars=200)
    assert case.count("</answer>") == 1 and "&lt;b&gt;" in case and "[image_url]" in case
    assert "x" * 50 + "&lt;/answer&gt;" in case
    clipped = fenced_case(conversation, "x" * 50, max_chars=20)
    assert "x" * 20 + " …[cut]" in clipped and "[cut]… " in clipped  # answer head, request tail
    assert message_text(None) == "" and message_text("plain") == "plain"


@pytest.mark.parametrize(
    ("draft", "expected"),
    [
        ("<answer>\nWarm up first, then punch.\n</answer>", "Warm up first, then punch."),
        ("<answer> Warm up first, then punch.", "Warm up first, then punch."),  # cut before closing
        ("<request> How do I box? </request>\n<answer> Warm up first. </answer>", "Warm up first."),
        ("Use `<answer>` tags in your XML.", "Use `<answer>` tags in your XML."),  # not an echo
        ("Warm up first, then punch.", "Warm up first, then punch."),
    ],
)
def test_repair_drafts_lose_echoed_fences(draft: str, expected: str) -> None:
    assert unwrap_echoed_fences(draft) == expected
