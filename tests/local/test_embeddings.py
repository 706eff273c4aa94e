"""The embedded engine's /v1/embeddings (issue 28): the frozen base model's final-layer hidden
states, mean-pooled and unit length, through the proxy and the real `openai` SDK (which asks
for base64 unless told otherwise)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from service.api.server_limits import uvicorn_config
from service.app import create_app
from service.backends.local.loader import load_model
from tests.fakes.server import ThreadedServer
from tests.local.conftest import local_settings

TEXTS = ["How do I bake bread at home?", "A robot may not injure a human being."]


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    path = tmp_path_factory.mktemp("embeddings")
    settings = local_settings(
        tiny_model_dir, path / "cache", mode="off", local_threads=1,
        db_url=f"sqlite+aiosqlite:///{path / 'conscience.db'}", spool_path=path / "spool.jsonl",
    )
    options = {k: v for k, v in uvicorn_config(settings).items() if k not in ("host", "port")}
    with ThreadedServer(create_app(settings), **options) as server:
        yield openai.OpenAI(base_url=f"{server.origin}/v1", api_key="none", max_retries=0)


def base_name(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


@pytest.mark.parametrize("encoding", [None, "float"])  # None: the SDK sends base64 and decodes it
def test_each_input_is_the_final_layers_mean_at_unit_length(
    client: openai.OpenAI, tiny_model_dir: Path, tmp_path: Path, encoding: str | None
) -> None:
    import torch

    options = {"encoding_format": encoding} if encoding else {}
    found = client.embeddings.create(model=base_name(client), input=TEXTS, **options)  # type: ignore[arg-type]
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


def test_an_input_embeds_the_same_alone_in_a_batch_and_again(client: openai.OpenAI) -> None:
    model = base_name(client)
    alone = client.embeddings.create(model=model, input=TEXTS[0]).data[0].embedding
    again = client.embeddings.create(model=model, input=TEXTS[0]).data[0].embedding
    batched = client.embeddings.create(model=model, input=[TEXTS[1], TEXTS[0]]).data[1].embedding
    assert alone == again == batched
    other = client.embeddings.create(model=model, input=TEXTS[1]).data[0].embedding
    assert other != alone


def test_token_ids_embed_like_their_text(client: openai.OpenAI, tiny_model_dir: Path, tmp_path: Path) -> None:
    model = base_name(client)
    ids = load_model(str(tiny_model_dir), cache_dir=tmp_path).tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    by_ids = client.embeddings.create(model=model, input=ids).data[0].embedding
    assert by_ids == client.embeddings.create(model=model, input=TEXTS[0]).data[0].embedding


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": ""}, 400, "input"),
        ({"input": [10**9]}, 400, "input"),
        ({"input": "hi", "dimensions": 8}, 400, "dimensions"),
        ({"input": "hi", "model": "gpt-4o"}, 404, "model"),
    ],
)
def test_bad_requests_get_openai_errors(client: openai.OpenAI, body: dict, status: int, param: str) -> None:
    request = {"model": base_name(client), **body}
    with pytest.raises(openai.APIStatusError) as raised:
        client.embeddings.create(**request)
    assert raised.value.status_code == status
    error = raised.value.body
    assert error["param"] == param and error["message"] and error["type"]
