"""Kong's AI Custom Guardrail and Portkey's webhook guardrail, replayed: each vendor's documented
request body sent to Conscience as the gateway sends it, and the answer read as the gateway reads
it. Kong calls /v1/moderations directly (its request and response are templates: docs/
integrations/kong.md); Portkey's fixed shape goes to /v1/conscience/portkey."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from service.store.models import Check, Triple
from tests.api.conftest import HARMFUL, REPAIRED, Proxy
from tests.fakes.upstream import FakeUpstream
from tests.integrations.venvs import ROOT

HARMLESS = "Talk to your neighbour kindly; most people do not know they are loud."


# --- Kong: the shipped plugin config (integrations/gateways/kong.yaml), as Kong renders it ------

KONG = yaml.safe_load((ROOT / "integrations" / "gateways" / "kong.yaml").read_text())["plugins"][0]["config"]


def kong_blocks(response: dict[str, Any]) -> tuple[bool, str]:
    """The config's `check_response` Lua function, in Python: block when any category of any
    result is true, naming them in the block message."""
    assert "pairs(result.categories)" in KONG["functions"]["check_response"]
    blocked = [name for result in response["results"] for name, on in result["categories"].items() if on]
    if blocked:
        return True, "Blocked by the conscience: " + ", ".join(blocked)
    return False, "passed"


def kong_call(conscience: Proxy, content: str) -> httpx.Response:
    """The config's request, its templates filled in as Kong fills them."""
    request = KONG["request"]
    body = {key: value.replace("$(content)", content) for key, value in request["body"].items()}
    headers = {k: v.replace("$(conf.params.api_key)", "sk-cons-unused") for k, v in request["headers"].items()}
    path = urlsplit(request["url"]).path
    return httpx.post(f"{conscience.server.origin}{path}", headers=headers, json=body, timeout=30)


def test_kong_blocks_a_harmful_answer_and_passes_a_harmless_one(conscience: Proxy, fake: FakeUpstream) -> None:
    harmful = kong_call(conscience, HARMFUL)
    assert harmful.status_code == 200
    assert kong_blocks(harmful.json()) == (True, "Blocked by the conscience: conscience")
    assert kong_blocks(kong_call(conscience, HARMLESS).json())[0] is False
    assert len(conscience.wait_rows(Check, 2, endpoint="moderations")) == 2


# --- Portkey: the webhook body of its "bring your own guardrails" page --------------------------

def portkey_body(answer: str, event: str = "afterRequestHook") -> dict[str, Any]:
    request = {"model": "gpt-4o", "max_tokens": 200, "stream": False,
               "messages": [{"role": "user", "content": "My neighbour is loud. What do I do?"}]}
    response = {
        "id": "chatcmpl-123", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
    }
    return {
        "request": {"json": request, "text": request["messages"][-1]["content"], "isStreamingRequest": False,
                    "isTransformed": False},
        "response": {"json": response, "text": answer, "statusCode": 200, "isTransformed": False},
        "provider": "openai", "requestType": "chatComplete", "metadata": {"_user": "team-a"},
        "eventType": event,
    }


def portkey_call(conscience: Proxy, body: dict[str, Any], repair: bool = False) -> dict[str, Any]:
    answer = httpx.post(
        f"{conscience.server.origin}/v1/conscience/portkey", params={"repair": "true"} if repair else {},
        headers={"Authorization": "Bearer sk-cons-unused", "Content-Type": "application/json"},
        json=body, timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_portkey_fails_a_harmful_answer_and_passes_a_harmless_one(conscience: Proxy, fake: FakeUpstream) -> None:
    harmful = portkey_call(conscience, portkey_body(HARMFUL))
    assert harmful["verdict"] is False and harmful["data"]["verdict"] == "unethical"
    assert "transformedData" not in harmful
    harmless = portkey_call(conscience, portkey_body(HARMLESS))
    assert harmless["verdict"] is True and "transformedData" not in harmless


def test_portkey_gets_the_repair_as_transformed_data(conscience: Proxy, fake: FakeUpstream) -> None:
    repaired = portkey_call(conscience, portkey_body(HARMFUL), repair=True)
    assert repaired["verdict"] is True
    response = repaired["transformedData"]["response"]["json"]
    assert response["choices"][0]["message"]["content"] == REPAIRED and response["id"] == "chatcmpl-123"
    assert response["usage"] == portkey_body(HARMFUL)["response"]["json"]["usage"]  # the whole object back
    [triple] = [t for t in conscience.wait_rows(Triple, 1) if t.request_id == repaired["data"]["id"]]
    assert triple.rejected == HARMFUL and triple.policy_model == "gpt-4o"


def test_portkey_before_the_request_has_nothing_to_judge(conscience: Proxy, fake: FakeUpstream) -> None:
    before = portkey_body(HARMFUL, event="beforeRequestHook")
    assert portkey_call(conscience, before)["verdict"] is True
    assert not fake.calls("verdict")
