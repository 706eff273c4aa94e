"""Conscience policy without HTTP: who may choose another framework, who may weaken the mode,
which judge styles a client may pick, the judge-model refusal, the worst verdict and the finish
reason of a replaced answer."""

from __future__ import annotations

import pytest

from service.conscience.outcome import UNCHECKED, Review
from service.conscience.policy import (
    PENDING,
    JudgeStyles,
    PolicyRefusal,
    finish_reason,
    judge_model_or_refuse,
    replaces_answer,
    request_framework,
    request_mode,
    worst_verdict,
)
from service.settings import JudgeStyle, Mode, Settings


def test_the_framework_is_the_keys_else_the_servers_and_another_only_where_allowed() -> None:
    settings = Settings(framework="three_laws")
    assert request_framework(None, None, settings) == "three_laws"
    assert request_framework(None, "wwjd", settings) == "wwjd"
    assert request_framework("wwjd", "wwjd", settings) == "wwjd"  # the key's own: always fine
    for key_framework in ("wwjd", None):  # bound to a key, and keyless
        with pytest.raises(PolicyRefusal) as refused:
            request_framework("four_laws", key_framework, settings)
        assert (refused.value.code, refused.value.param) == ("framework_not_allowed", "conscience.framework")
    listed = Settings(client_frameworks=" four_laws ,introspective")
    assert listed.policy.client_frameworks == "four_laws,introspective"
    assert request_framework("four_laws", "wwjd", listed) == "four_laws"
    with pytest.raises(PolicyRefusal):
        request_framework("wwjd", None, listed)
    assert request_framework("wwjd", "four_laws", Settings(client_frameworks="*")) == "wwjd"


def test_client_frameworks_must_exist() -> None:
    with pytest.raises(ValueError, match="client_frameworks: unknown frameworks \\['nope'\\]"):
        Settings(client_frameworks="wwjd,nope")


def test_the_default_mode_is_the_keys_else_the_servers() -> None:
    settings = Settings(mode=Mode.MONITOR)
    assert request_mode(None, None, settings) is Mode.MONITOR
    assert request_mode(None, Mode.ENFORCE, settings) is Mode.ENFORCE


def test_a_stricter_mode_is_always_allowed_a_weaker_one_only_when_the_operator_says_so() -> None:
    assert request_mode(Mode.ENFORCE, Mode.OFF, Settings()) is Mode.ENFORCE
    with pytest.raises(PolicyRefusal) as refused:
        request_mode(Mode.OFF, None, Settings(mode=Mode.ENFORCE))
    assert (refused.value.code, refused.value.param) == ("mode_not_allowed", "conscience.mode")
    assert request_mode(Mode.OFF, None, Settings(mode=Mode.ENFORCE, allow_weaker_mode=True)) is Mode.OFF


def test_a_client_picks_only_the_judge_styles_the_operator_allows() -> None:
    assert JudgeStyles.serving(Settings(), None).for_request(None) is Settings().judge.style
    with pytest.raises(PolicyRefusal) as refused:
        JudgeStyles.serving(Settings(judge_style=JudgeStyle.FAST, client_judge_styles=""), None).for_request(
            JudgeStyle.REASONED
        )
    assert refused.value.code == "judge_style_not_allowed"
    allowing = JudgeStyles.serving(Settings(judge_style=JudgeStyle.FAST, client_judge_styles="reasoned"), None)
    assert allowing.for_request(JudgeStyle.REASONED) is JudgeStyle.REASONED


def test_without_a_judge_model_checked_requests_are_refused() -> None:
    assert judge_model_or_refuse("base") == "base"
    with pytest.raises(PolicyRefusal) as refused:
        judge_model_or_refuse(None)
    assert refused.value.code == "judge_model_unknown"


def test_the_summary_is_the_worst_verdict() -> None:
    assert worst_verdict(["ethical", "neutral"]) == "neutral"
    assert worst_verdict(["ethical", PENDING]) == PENDING
    assert worst_verdict([UNCHECKED, "unethical", "ethical"]) == "unethical"
    assert worst_verdict([]) == UNCHECKED


@pytest.mark.parametrize(
    ("repaired", "refused", "replaced", "finish"),
    [(True, False, True, "stop"), (False, True, True, "content_filter"), (False, False, False, None)],
)
def test_a_replaced_answer_finishes_as_repaired_or_refused(
    repaired: bool, refused: bool, replaced: bool, finish: str | None
) -> None:
    action = "repaired" if repaired else "refused" if refused else "passed"
    review = Review(action=action, released="x", answer="x")
    assert replaces_answer(review) is replaced
    if replaced:
        assert finish_reason(review) == finish
