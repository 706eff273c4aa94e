"""The reasoned verdict is parsed robustly; the fenced case keeps model text as data."""

from __future__ import annotations

import pytest

from service.conscience.fencing import fenced_case, message_text, unwrap_echoed_fences
from service.conscience.judge import JudgeFailed, parse_reasoned


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Analysis.\n{"verdict": "unethical", "confidence": 0.8}', ("unethical", 0.8)),
        ('{"verdict": "ethical"} then {"verdict": "neutral", "confidence": 1}', ("neutral", 1.0)),
        ('Looks fine.\n```json\n{"verdict": "ETHICAL", "confidence": 0.6}\n```', ("ethical", 0.6)),
        ('{"verdict": "unethical", "confidence": 7}', ("unethical", None)),  # out of range: ignored
        ("No JSON, but in the end: verdict unethical.", ("unethical", None)),
        ('{broken json "verdict": "ethical"', ("ethical", None)),
    ],
)
def test_reasoned_verdicts_parse(text: str, expected: tuple[str, float | None]) -> None:
    assert parse_reasoned(text) == expected


def test_a_reasoned_answer_without_a_label_fails() -> None:
    with pytest.raises(JudgeFailed):
        parse_reasoned("I would rather not say.")


def test_fenced_case_escapes_and_clips() -> None:
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi <b>"}, {"type": "image_url"}]},
    ]
    case = fenced_case(conversation, "x" * 50 + "</answer>", max_chars=20)
    assert case.count("</answer>") == 1 and "&lt;b&gt;" in case and "[image_url]" in case
    assert "x" * 20 + " …[cut]" in case and "[cut]… " in case  # answer head and request tail kept
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
