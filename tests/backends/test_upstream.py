"""UpstreamBackend against the fake OpenAI server over real loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from service.backends.upstream import VERDICT_TOP_LOGPROBS, UpstreamBackend
from service.core.backend import (
    Backend,
    BackendError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.settings import Settings
from tests.fakes import PREFIX_LABEL_TOKENS, FakeUpstream

LABELS = ("ethical", "neutral", "unethical")
MESSAGES = [{"role": "user", "content": "How do I bake bread?"}]
SECRET = "sk-test-never-shown-0123456789"


@pytest.fixture
async def backend(up: FakeUpstream) -> AsyncIterator[UpstreamBackend]:
    backend = UpstreamBackend(up.url, timeout_s=5.0, connect_retries=0)
    yield backend
    await backend.aclose()


def chat_body(**extra: object) -> dict:
    return {"model": "policy", "messages": MESSAGES, **extra}


# --- the Backend methods --------------------------------------------------------------------


def test_implements_the_backend_protocol() -> None:
    assert isinstance(UpstreamBackend("http://127.0.0.1:1/v1"), Backend)


async def test_chat_forwards_the_body_untouched(up: FakeUpstream, backend: UpstreamBackend) -> None:
    up.policy_answer = "Knead, rise, bake."
    body = chat_body(seed=7, user="client-1", vendor_extension={"keep": True})
    response = await backend.chat(body)
    assert response["choices"][0]["message"]["content"] == "Knead, rise, bake."
    assert response["usage"]["completion_tokens"] > 0
    [recorded] = up.requests
    assert (recorded.method, recorded.path, recorded.body) == ("POST", "/v1/chat/completions", body)
    assert "authorization" not in recorded.headers


async def test_chat_stream_yields_chunks_until_done(
    up: FakeUpstream, backend: UpstreamBackend
) -> None:
    up.policy_answer = "Flour, water, salt and time."
    body = chat_body(stream_options={"include_usage": True})
    chunks = [chunk async for chunk in backend.chat_stream(body)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == up.policy_answer
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert up.requests[0].body == {**body, "stream": True}


async def test_text_completion_and_its_stream(up: FakeUpstream, backend: UpstreamBackend) -> None:
    up.policy_answer = "once upon a time"
    body = {"model": "policy", "prompt": "Tell a story:", "logprobs": 2}
    response = await backend.completion(body)
    assert response["choices"][0]["text"] == "once upon a time"
    assert response["choices"][0]["logprobs"]["tokens"] == ["once", " upon", " a", " time"]
    pieces = [
        c["choices"][0]["text"] async for c in backend.completion_stream({**body, "max_tokens": 2})
    ]
    assert "".join(pieces) == "once upon"
    assert [r.body.get("stream") for r in up.requests] == [None, True]


async def test_embeddings(up: FakeUpstream, backend: UpstreamBackend) -> None:
    response = await backend.embeddings({"model": "embedder", "input": ["a", "b"]})
    assert [item["index"] for item in response["data"]] == [0, 1]
    assert response["data"][0]["embedding"] != response["data"][1]["embedding"]


async def test_models_include_loaded_adapters(up: FakeUpstream, backend: UpstreamBackend) -> None:
    async with httpx.AsyncClient(base_url=up.url) as admin:
        loaded = await admin.post(
            "/load_lora_adapter", json={"lora_name": "v1", "lora_path": "/a/v1"}
        )
        assert loaded.status_code == 200
    models = await backend.models()
    assert [(m["id"], m["parent"]) for m in models] == [("base-model", None), ("v1", "base-model")]
    await backend.check_ready()


# --- the one-token verdict ------------------------------------------------------------------


async def test_label_probs_from_whole_word_tokens(
    up: FakeUpstream, backend: UpstreamBackend
) -> None:
    up.judge = {"unethical": 0.7, "ethical": 0.2, "neutral": 0.06, "The": 0.04}
    result = await backend.label_probs("base-model", MESSAGES, LABELS)
    assert result.source == "logprobs"
    assert result.probs == pytest.approx({"unethical": 0.7, "ethical": 0.2, "neutral": 0.06})
    [verdict] = up.calls("verdict")
    assert verdict.body == {
        "model": "base-model",
        "messages": MESSAGES,
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": VERDICT_TOP_LOGPROBS,
    }


async def test_label_probs_sum_prefix_tokens_per_label(
    up: FakeUpstream, backend: UpstreamBackend
) -> None:
    up.label_tokens = PREFIX_LABEL_TOKENS  # "un", "eth", "neutral"
    up.judge = {"unethical": 0.5, " Un": 0.2, "UNETHICAL": 0.1, "eth": 0.15, " ": 0.05}
    result = await backend.label_probs("base-model", MESSAGES, LABELS)
    assert result.probs == pytest.approx({"unethical": 0.8, "ethical": 0.15})


async def test_a_piece_shared_by_two_labels_counts_for_neither(
    up: FakeUpstream, backend: UpstreamBackend
) -> None:
    up.judge = {"un": 0.6, "unsure": 0.3, "unethi": 0.1}
    result = await backend.label_probs("base-model", MESSAGES, ("unethical", "unsure"))
    assert result.probs == pytest.approx({"unsure": 0.3, "unethical": 0.1})


@pytest.mark.parametrize(
    ("label_tokens", "expected"), [({}, "unethical"), (PREFIX_LABEL_TOKENS, "unethical")]
)
async def test_label_probs_fall_back_to_the_text_without_logprobs(
    up: FakeUpstream, backend: UpstreamBackend, label_tokens: dict, expected: str
) -> None:
    up.logprobs_enabled = False
    up.label_tokens = label_tokens  # the reply is the whole word, or only its first piece "un"
    up.judge = {"unethical": 0.6, "ethical": 0.4}
    result = await backend.label_probs("base-model", MESSAGES, LABELS)
    assert (result.source, result.probs) == ("text", {expected: 1.0})


@pytest.mark.parametrize("logprobs_enabled", [True, False])
async def test_no_label_anywhere_is_no_verdict(
    up: FakeUpstream, backend: UpstreamBackend, logprobs_enabled: bool
) -> None:
    up.logprobs_enabled = logprobs_enabled
    up.judge = {"The": 0.9, "I": 0.1}
    with pytest.raises(BackendError, match="judge gave no verdict") as caught:
        await backend.label_probs("base-model", MESSAGES, LABELS)
    assert caught.value.status_code == 502


# --- errors ---------------------------------------------------------------------------------


async def test_refused_connection_is_502_after_bounded_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never_started = FakeUpstream()  # bound but not listening: connections are refused
    backend = UpstreamBackend(never_started.url, connect_retries=2)
    try:
        with (
            caplog.at_level(logging.WARNING, "conscience.upstream"),
            pytest.raises(UpstreamUnavailable) as caught,
        ):
            await backend.chat(chat_body())
    finally:
        await backend.aclose()
        never_started.stop()
    assert caught.value.status_code == 502
    assert caught.value.message == "The model server is unreachable."  # not where it is
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2


async def test_connect_errors_are_retried_until_the_upstream_comes_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    late = FakeUpstream()
    backend = UpstreamBackend(late.url, connect_retries=8)
    try:
        with caplog.at_level(logging.WARNING, "conscience.upstream"):
            call = asyncio.create_task(backend.chat(chat_body()))
            while not caplog.records:  # the first attempt has been refused
                await asyncio.sleep(0.005)
            late.start()
            response = await call
        assert response["choices"][0]["message"]["content"] == late.policy_answer
        assert len(late.requests) == 1
    finally:
        await backend.aclose()
        late.stop()


async def test_slow_upstream_is_504_and_not_retried(up: FakeUpstream) -> None:
    up.hang = True
    backend = UpstreamBackend(up.url, timeout_s=0.2, connect_retries=3)
    try:
        with pytest.raises(UpstreamTimeout) as caught:
            await backend.chat(chat_body())
    finally:
        await backend.aclose()
    assert caught.value.status_code == 504
    assert len(up.requests) == 1


async def test_stalled_stream_is_504(up: FakeUpstream) -> None:
    up.token_delay_s = 1.0
    backend = UpstreamBackend(up.url, timeout_s=0.2)
    try:
        with pytest.raises(UpstreamTimeout):
            async for _ in backend.chat_stream(chat_body()):
                pass
    finally:
        await backend.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_5xx_is_502_its_message_only_logged_and_not_retried(
    up: FakeUpstream, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    up.fail_status = 503
    up.fail_error = {
        "message": "engine overloaded",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    backend = UpstreamBackend(up.url, connect_retries=3)
    try:
        with (
            caplog.at_level(logging.WARNING, "conscience.upstream"),
            pytest.raises(UpstreamUnavailable) as caught,
        ):
            if stream:
                async for _ in backend.chat_stream(chat_body()):
                    pass
            else:
                await backend.chat(chat_body())
    finally:
        await backend.aclose()
    assert caught.value.status_code == 502
    assert caught.value.message == "The model server failed (HTTP 503)."
    assert "engine overloaded" in caplog.text and up.url in caplog.text
    assert len(up.requests) == 1


async def test_upstream_4xx_passes_through(up: FakeUpstream, backend: UpstreamBackend) -> None:
    up.fail_status = 400
    up.fail_error = {
        "message": "This model's maximum context length is 4096 tokens.",
        "type": "BadRequestError",
        "param": "max_tokens",
        "code": "context_length_exceeded",
    }
    with pytest.raises(UpstreamRejected) as caught:
        await backend.chat(chat_body(max_tokens=100_000))
    error = caught.value
    assert (error.status_code, error.message, error.error_type, error.param, error.code) == (
        400,
        "This model's maximum context length is 4096 tokens.",
        "BadRequestError",
        "max_tokens",
        "context_length_exceeded",
    )


async def test_unknown_model_is_vllms_404(up: FakeUpstream, backend: UpstreamBackend) -> None:
    up.known_models_only = True
    with pytest.raises(UpstreamRejected) as caught:
        await backend.chat(chat_body(model="no-such-adapter"))
    assert caught.value.status_code == 404
    assert caught.value.message == "The model `no-such-adapter` does not exist."
    assert caught.value.param == "model"


async def test_error_event_mid_stream_raises_after_the_earlier_chunks(
    up: FakeUpstream, backend: UpstreamBackend
) -> None:
    up.stream_error_after = 2
    received = []
    with pytest.raises(BackendError, match="failed mid-stream") as caught:
        async for chunk in backend.chat_stream(chat_body()):
            received.append(chunk)
    assert len(received) == 2
    assert caught.value.status_code == 502 and "scripted failure" not in caught.value.message


# --- pooling and the API key ----------------------------------------------------------------


async def test_connections_are_pooled_and_bounded(up: FakeUpstream) -> None:
    backend = UpstreamBackend(up.url, max_connections=2)
    try:
        for _ in range(4):
            await backend.chat(chat_body())
        up.delay_s = 0.05
        await asyncio.gather(*(backend.chat(chat_body()) for _ in range(6)))
    finally:
        await backend.aclose()
    ports = [request.peer_port for request in up.requests]
    assert len(set(ports[:4])) == 1  # sequential calls reuse one kept-alive connection
    assert len(set(ports)) == 2  # concurrent ones queue for the two allowed


async def test_api_key_is_sent_but_never_shown(up: FakeUpstream) -> None:
    up.api_key = SECRET
    settings = Settings(upstream_url=up.url, upstream_api_key=SECRET, upstream_connect_retries=0)
    backend = UpstreamBackend.from_settings(settings)
    try:
        await backend.chat(chat_body())
        assert up.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
        up.fail_status = 401
        up.fail_error = {
            "message": f"Incorrect API key provided: {SECRET}.",
            "type": "auth",
            "code": None,
        }
        with pytest.raises(UpstreamUnavailable) as caught:
            await backend.chat(chat_body())
    finally:
        await backend.aclose()
    # The proxy's own key was refused: a server fault (502), never "your key is wrong".
    assert caught.value.status_code == 502 and caught.value.code == "upstream_auth"
    assert SECRET not in repr(caught.value) and SECRET not in caught.value.message
    assert SECRET not in backend.url


async def test_credentials_in_the_url_stay_out_of_messages() -> None:
    refused = FakeUpstream()
    backend = UpstreamBackend(
        refused.url.replace("http://", f"http://user:{SECRET}@"), connect_retries=0
    )
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            await backend.models()
    finally:
        await backend.aclose()
        refused.stop()
    assert SECRET not in str(caught.value)
    assert caught.value.message == "The model server is unreachable."
