"""The embedded engine through the proxy (issue 26): a client's name for a model it does not
serve is a 404, not an answer from the loaded model, and a max_tokens past the model's context
is a 400, not silently cut to what fits."""

from __future__ import annotations

import openai
import pytest

ASK = [{"role": "user", "content": "Hello robot."}]


def test_a_name_the_engine_does_not_serve_is_a_404(sdk_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk_client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=2)
    assert raised.value.body["message"] == "The model `gpt-4o` does not exist."
    served = sdk_client.models.list().data[0].id
    assert sdk_client.chat.completions.create(model=served, messages=ASK, max_tokens=2).choices


def test_max_tokens_past_the_context_is_a_400(sdk_client: openai.OpenAI) -> None:
    served = sdk_client.models.list().data[0]
    context_len = served.model_extra["max_model_len"]
    with pytest.raises(openai.BadRequestError) as raised:
        sdk_client.chat.completions.create(model=served.id, messages=ASK, max_tokens=100_000_000)
    assert raised.value.body["param"] == "max_tokens"
    assert f"context length of `{served.id}`: {context_len} tokens" in raised.value.body["message"]
