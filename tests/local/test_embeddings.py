"""The embedded engine's /v1/embeddings (issue 28): the frozen base model's final-layer hidden
states, mean-pooled and unit length, through the proxy and the real `openai` SDK (which asks
for base64 unless told otherwise)."""

from __future__ import annotations

import math
from pathlib import Path

import openai
import pytest

from service.backends.local.loader import load_model

TEXTS = ["How do I bake bread at home?", "A robot may not injure a human being."]


def base_name(sdk_client: openai.OpenAI) -> str:
    return sdk_client.models.list().data[0].id


@pytest.mark.parametrize("encoding", [None, "float"])  # None: the SDK sends base64 and decodes it
def test_each_input_is_the_final_layers_mean_at_unit_length(
    sdk_client: openai.OpenAI, tiny_model_dir: Path, tmp_path: Path, encoding: str | None
) -> None:
    import torch

    options = {"encoding_format": encoding} if encoding else {}
    found = sdk_client.embeddings.create(model=base_name(sdk_client), input=TEXTS, **options)  # type: ignore[arg-type]
    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path)
    hidden = loaded.model.config.hidden_size
    assert [item.index for item in found.data] == [0, 1]
    for text, item in zip(TEXTS, found.data, strict=True):
        assert len(item.embedding) == hidden
        assert math.isclose(math.fsum(v * v for v in item.embedding), 1.0, rel_tol=1e-4)
        ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            states = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        expected = states[-1][0].mean(dim=0)
        torch.testing.assert_close(torch.tensor(item.embedding), expected / expected.norm(), rtol=1e-4, atol=1e-5)
    assert found.usage.prompt_tokens == sum(len(loaded.tokenizer(t)["input_ids"]) for t in TEXTS)


def test_an_input_embeds_the_same_alone_in_a_batch_and_again(sdk_client: openai.OpenAI) -> None:
    model = base_name(sdk_client)
    alone = sdk_client.embeddings.create(model=model, input=TEXTS[0]).data[0].embedding
    again = sdk_client.embeddings.create(model=model, input=TEXTS[0]).data[0].embedding
    batched = sdk_client.embeddings.create(model=model, input=[TEXTS[1], TEXTS[0]]).data[1].embedding
    assert alone == again == batched
    other = sdk_client.embeddings.create(model=model, input=TEXTS[1]).data[0].embedding
    assert other != alone


def test_token_ids_embed_like_their_text(sdk_client: openai.OpenAI, tiny_model_dir: Path, tmp_path: Path) -> None:
    model = base_name(sdk_client)
    ids = load_model(str(tiny_model_dir), cache_dir=tmp_path).tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    by_ids = sdk_client.embeddings.create(model=model, input=ids).data[0].embedding
    assert by_ids == sdk_client.embeddings.create(model=model, input=TEXTS[0]).data[0].embedding


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": ""}, 400, "input"),
        ({"input": [10**9]}, 400, "input"),
        ({"input": "hi", "dimensions": 8}, 400, "dimensions"),
        ({"input": "hi", "model": "gpt-4o"}, 404, "model"),
    ],
)
def test_bad_requests_get_openai_errors(sdk_client: openai.OpenAI, body: dict, status: int, param: str) -> None:
    request = {"model": base_name(sdk_client), **body}
    with pytest.raises(openai.APIStatusError) as raised:
        sdk_client.embeddings.create(**request)
    assert raised.value.status_code == status
    error = raised.value.body
    assert error["param"] == param and error["message"] and error["type"]
