"""The embedded engine through the proxy (issue 26): a client's name for a model it does not
serve is a 404, not an answer from the loaded model, and a max_tokens past the model's context
is a 400, not silently cut to what fits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from service.api.server_limits import uvicorn_config
from service.app import create_app
from tests.fakes.server import ThreadedServer
from tests.local.conftest import local_settings

ASK = [{"role": "user", "content": "Hello robot."}]


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    path = tmp_path_factory.mktemp("served-names")
    settings = local_settings(
        tiny_model_dir, path / "cache", mode="off", local_threads=1,
        db_url=f"sqlite+aiosqlite:///{path / 'conscience.db'}", spool_path=path / "spool.jsonl",
    )
    options = {k: v for k, v in uvicorn_config(settings).items() if k not in ("host", "port")}
    with ThreadedServer(create_app(settings), **options) as server:
        yield openai.OpenAI(base_url=f"{server.origin}/v1", api_key="none", max_retries=0)


def test_a_name_the_engine_does_not_serve_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=2)
    assert raised.value.body["message"] == "The model `gpt-4o` does not exist."
    served = client.models.list().data[0].id
    assert client.chat.completions.create(model=served, messages=ASK, max_tokens=2).choices


def test_max_tokens_past_the_context_is_a_400(client: openai.OpenAI) -> None:
    served = client.models.list().data[0]
    context_len = served.model_extra["max_model_len"]
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=served.id, messages=ASK, max_tokens=100_000_000)
    assert raised.value.body["param"] == "max_tokens"
    assert f"context length of `{served.id}`: {context_len} tokens" in raised.value.body["message"]
