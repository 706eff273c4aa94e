"""The client's model name and output budget are checked as vLLM checks them (issue 26): a model
the server does not serve is a 404, not silently another model; a max_tokens no answer can have
is a 400 on every generation surface."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.conftest import ASK_BODY, ProxyFactory
from tests.fakes.upstream import FakeUpstream

ASK = ASK_BODY["messages"]


def test_an_unserved_model_is_a_404_not_the_policy(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    fake.adapters["conscience-v1"] = "/adapters/v1"
    proxy = start_proxy(model="base-model")  # the proxy names its policy: the client's is replaced
    with pytest.raises(openai.NotFoundError) as raised:
        proxy.client().chat.completions.create(model="gpt-4o", messages=ASK)
    assert raised.value.body == {
        "message": "The model `gpt-4o` does not exist.", "type": "not_found_error",
        "param": "model", "code": "model_not_found",
    }
    with pytest.raises(openai.NotFoundError):
        proxy.client().completions.create(model="gpt-4o", prompt="Hi")
    with pytest.raises(openai.NotFoundError):
        proxy.client().responses.create(model="gpt-4o", input="Hi")
    assert fake.calls("generation") == []
    # Served names pass: the policy, the judge, and what the upstream lists (an adapter).
    for name in ("base-model", "conscience-v1"):
        proxy.client().chat.completions.create(model=name, messages=ASK)
    assert [call.body["model"] for call in fake.calls("generation")] == ["base-model"] * 2


def test_aliases_name_a_served_model(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    pinned = start_proxy(model="base-model", model_aliases="gpt-4o=base-model, gpt-4o-mini=base-model")
    for name in ("gpt-4o", "gpt-4o-mini"):
        pinned.client().chat.completions.create(model=name, messages=ASK)
    # Where the client's name is forwarded (no policy named), the alias is what goes upstream.
    forwarding = start_proxy(model_aliases="gpt-4o=base-model")
    forwarding.client().chat.completions.create(model="gpt-4o", messages=ASK)
    assert [call.body["model"] for call in fake.calls("generation")] == ["base-model"] * 3


def test_aliases_that_are_not_pairs_are_refused() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="not CLIENT_NAME=SERVED_NAME"):
        Settings(_env_file=None, model_aliases="gpt-4o")


def _bad_request(call: object, param: str) -> str:
    with pytest.raises(openai.BadRequestError) as raised:
        call()  # type: ignore[operator]
    error = raised.value.body
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    return error["message"]


def test_max_tokens_past_the_context_length_is_a_400(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    fake.max_model_len = 4096  # as vLLM lists it in /v1/models
    client = start_proxy().client()
    huge = 100_000_000
    message = _bad_request(
        lambda: client.chat.completions.create(model="base-model", messages=ASK, max_tokens=huge), "max_tokens"
    )
    assert message == "max_tokens is 100000000, more than the context length of `base-model`: 4096 tokens."
    _bad_request(lambda: client.chat.completions.create(
        model="base-model", messages=ASK, max_completion_tokens=huge), "max_completion_tokens")
    _bad_request(lambda: client.completions.create(model="base-model", prompt="Hi", max_tokens=huge), "max_tokens")
    message = _bad_request(
        lambda: client.responses.create(model="base-model", input="Hi", max_output_tokens=huge), "max_output_tokens"
    )
    assert message.startswith("max_output_tokens is 100000000")
    assert fake.calls("generation") == []
    client.chat.completions.create(model="base-model", messages=ASK, max_tokens=4096)  # fits: served


def test_max_tokens_limit_bounds_every_request(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(max_tokens_limit=100)  # the upstream lists no max_model_len here
    message = _bad_request(
        lambda: proxy.client().chat.completions.create(model="base-model", messages=ASK, max_tokens=101),
        "max_tokens",
    )
    assert "this server's limit (--max-tokens-limit): 100 tokens" in message
    response = httpx.post(f"{proxy.url}/chat/completions", json={**ASK_BODY, "max_tokens": 100}, timeout=30)
    assert response.status_code == 200, response.text
