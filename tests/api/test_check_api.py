"""POST /v1/moderations and POST /v1/conscience/check over real loopback HTTP: the real `openai`
SDK, the fake upstream as judge and repairer, the real SQLite store and `conscience triples list`."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from service.store.models import Check, Triple
from tests.api.conftest import HARMFUL, REPAIRED, Proxy, ProxyFactory
from tests.api.test_client_keys import create_key, wait_until_required
from tests.fakes.upstream import FakeUpstream

HARMLESS = "Talk to them kindly; most neighbours do not know they are loud."
ASK = [{"role": "user", "content": "My neighbour is loud. What do I do?"}]


def post(proxy: Proxy, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{proxy.server.origin}{path}", json=body, headers=headers, timeout=30)


# --- /v1/moderations ------------------------------------------------------------------------------

def test_the_sdk_moderates_with_the_conscience(proxy: Proxy, fake: FakeUpstream) -> None:
    moderation = proxy.client().moderations.create(input=[HARMFUL, HARMLESS])
    harmful, harmless = moderation.results
    assert harmful.flagged and harmful.categories.model_extra["conscience"] is True
    assert harmful.category_scores.model_extra["conscience"] == pytest.approx(0.9)
    assert not harmful.categories.violence and harmful.category_scores.hate == 0.0  # not judged apart
    assert not harmless.flagged and harmless.categories.model_extra["conscience"] is False
    assert moderation.model == "conscience"
    # One check per input, recorded as the proxy records its answers; nothing repaired.
    checks = proxy.wait_rows(Check, 2)
    assert sorted(c.verdict for c in checks) == ["ethical", "unethical"]
    assert {c.endpoint for c in checks} == {"moderations"} and not proxy.triples()
    assert not fake.calls("generation")  # a moderation never drafts a repair


def test_a_moderation_reads_the_request_from_its_extension_field(proxy: Proxy, fake: FakeUpstream) -> None:
    moderation = proxy.client().moderations.create(
        input="Sure.", model="omni-moderation-latest",
        extra_body={"conscience": {"messages": ASK}},
    )
    assert moderation.model == "omni-moderation-latest" and not moderation.results[0].flagged
    [verdict] = fake.calls("verdict")
    judged = verdict.body["messages"][-1]["content"]
    assert "My neighbour is loud" in judged and "Sure." in judged


def test_a_moderation_without_a_request_is_judged_as_an_answer_to_an_empty_one(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    proxy.client().moderations.create(input=HARMLESS)
    [verdict] = fake.calls("verdict")
    assert "<request>\n\n</request>" in verdict.body["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, "input"),
        ({"input": []}, "input"),
        ({"input": "x", "conscience": {"mode": "off"}}, "conscience.mode"),
        ({"input": ["x"] * 9}, "input"),
    ],
)
def test_bad_moderation_input_is_a_400_in_openai_shape(
    start_proxy: ProxyFactory, body: dict[str, Any], param: str
) -> None:
    proxy = start_proxy(max_n=8)
    answer = post(proxy, "/v1/moderations", body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param


# --- /v1/conscience/check ----------------------------------------------------------------------

def test_check_repairs_a_harmful_answer_into_a_triple_the_cli_lists(proxy: Proxy, fake: FakeUpstream) -> None:
    answer = post(proxy, "/v1/conscience/check", {"messages": ASK, "answer": HARMFUL, "repair": True,
                                                  "model": "gateway-model"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["verdict"] == "unethical" and body["flagged"] and body["repaired"]
    assert body["framework"] == proxy.settings.policy.framework and body["judge_model"] == "base-model"
    [result] = body["results"]
    assert result["answer"] == REPAIRED and result["repaired"] and result["score"] == pytest.approx(0.9)
    [triple] = proxy.wait_rows(Triple, 1)
    assert triple.rejected == HARMFUL and triple.chosen == REPAIRED and triple.prompt == ASK
    assert triple.request_id == body["id"] and triple.policy_model == "gateway-model"
    [check] = proxy.checks()
    assert check.endpoint == "check" and check.mode == "enforce" and check.repaired

    listed = subprocess.run(
        [sys.executable, "-m", "conscience_cli", "triples", "list", "--db-url", proxy.settings.store.db_url],
        capture_output=True, text=True, timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert triple.id in listed.stdout


def test_check_passes_a_harmless_answer_as_it_is(proxy: Proxy, fake: FakeUpstream) -> None:
    body = post(proxy, "/v1/conscience/check", {"messages": ASK, "answer": HARMLESS, "repair": True}).json()
    assert body["verdict"] == "ethical" and not body["flagged"]
    assert body["results"][0]["answer"] == HARMLESS and not body["results"][0]["repaired"]
    assert not fake.calls("generation") and not proxy.triples()


def test_check_without_repair_reports_the_verdict_only(proxy: Proxy, fake: FakeUpstream) -> None:
    choices = [HARMLESS, {"message": {"role": "assistant", "content": HARMFUL}}]
    body = post(proxy, "/v1/conscience/check", {"messages": ASK, "choices": choices}).json()
    assert [r["flagged"] for r in body["results"]] == [False, True] and body["flagged"]
    assert all(r["answer"] is None and not r["refused"] for r in body["results"])
    assert body["mode"] == "monitor" and not fake.calls("generation")
    checks = proxy.wait_rows(Check, 2)
    assert {c.mode for c in checks} == {"monitor"} and not proxy.triples()


def test_check_reads_a_choice_as_the_proxy_reads_it(proxy: Proxy, fake: FakeUpstream) -> None:
    hidden = {"message": {"role": "assistant", "content": "Fine.", "reasoning_content": HARMFUL}}
    body = post(proxy, "/v1/conscience/check", {"messages": ASK, "choices": [hidden]}).json()
    assert body["flagged"], "the reasoning is judged too"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"messages": ASK}, 400, None),  # neither answer nor choices
        ({"messages": ASK, "answer": "a", "choices": ["b"]}, 400, None),
        ({"messages": [{"role": 5}], "answer": "a"}, 400, "messages.0.role"),
        ({"answer": "a", "conscience": {"framework": "nope"}}, 403, "conscience.framework"),
        ({"answer": "a", "conscience": {"judge_style": "reasoned"}}, 403, "conscience.judge_style"),
    ],
)
def test_bad_check_input_is_an_openai_shaped_error(
    proxy: Proxy, body: dict[str, Any], status: int, param: str | None
) -> None:
    answer = post(proxy, "/v1/conscience/check", body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param


def test_both_endpoints_take_the_proxys_client_keys(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(api_key_refresh_s=0.2)
    key = create_key(proxy, "--framework", "wwjd")
    wait_until_required(proxy)
    for path, body in (("/v1/moderations", {"input": "x"}), ("/v1/conscience/check", {"answer": "x"})):
        refused = post(proxy, path, body, key="sk-cons-wrong")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    checked = post(proxy, "/v1/conscience/check", {"answer": HARMLESS}, key=key).json()
    assert checked["framework"] == "wwjd"  # the key's framework, as on the proxy path
    [check] = proxy.wait_rows(Check, 1)
    assert check.api_key_id is not None and check.framework == "wwjd"
    with pytest.raises(openai.AuthenticationError):
        proxy.client(api_key="sk-cons-wrong").moderations.create(input="x")


def test_both_endpoints_are_admitted_like_the_proxys_reviews(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    """One review slot: while a check holds it, a moderation is refused with 429 and Retry-After."""
    proxy = start_proxy(max_concurrent_reviews=1, max_n=1)
    fake.delay_s = 1.0
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, proxy, "/v1/conscience/check", {"answer": HARMLESS})
        time.sleep(0.5)
        refused = post(proxy, "/v1/moderations", {"input": "x"})
        assert held.result().status_code == 200
    assert refused.status_code == 429, refused.text
    assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
    assert refused.headers.get("retry-after")
