"""UpstreamBackend's bounds against an upstream that misbehaves on purpose: trickles, floods,
answers 200 with something that is not a completion, or is sent text no JSON can carry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from service.backends.upstream import UpstreamBackend
from service.core.backend import BackendError, UpstreamTimeout, UpstreamUnavailable
from service.settings import Settings
from tests.backends.raw_server import Handler, RawServer, read_request

Serve = Callable[[Handler], Awaitable[RawServer]]
COMPLETION = orjson.dumps(
    {"id": "x", "object": "chat.completion", "model": "m",
     "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
)
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


def answering(head: bytes, body: bytes, *, byte_delay_s: float = 0.0) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(head)
        if not byte_delay_s:
            writer.write(body)
        for byte in body if byte_delay_s else b"":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(byte_delay_s)
        await writer.drain()
    return handler


def json_head(length: int, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n" % (
        extra, length
    )


def sse_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


async def backend_for(raw: RawServer, **settings: object) -> UpstreamBackend:
    values = {"upstream_url": raw.url + "/v1", "upstream_connect_retries": 0, **settings}
    return UpstreamBackend.from_settings(Settings(**values))


@pytest.fixture
async def backends() -> AsyncIterator[list[UpstreamBackend]]:
    made: list[UpstreamBackend] = []
    yield made
    for backend in made:
        await backend.aclose()


async def call(serve: Serve, backends: list, handler: Handler, *, stream: bool = False,
               body: dict = BODY, **settings: object) -> object:
    backend = await backend_for(await serve(handler), **settings)
    backends.append(backend)
    if stream:
        return [chunk async for chunk in backend.chat_stream(body)]
    return await backend.chat(body)


async def test_a_trickle_is_cut_at_the_whole_call_deadline(serve: Serve, backends: list) -> None:
    trickle = answering(json_head(len(COMPLETION)), COMPLETION, byte_delay_s=0.05)  # ~6 s in all
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeout) as caught:
        await call(serve, backends, trickle, upstream_timeout_s=5.0, upstream_deadline_s=0.5)
    assert time.perf_counter() - started < 2.0
    assert caught.value.status_code == 504 and "deadline" in caught.value.message


async def test_a_stream_is_cut_at_the_whole_call_deadline(serve: Serve, backends: list) -> None:
    event = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": "x"}}]}) + b"\n\n"
    slow_events = answering(sse_head(), event * 100, byte_delay_s=0.001)
    with pytest.raises(UpstreamTimeout):
        await call(serve, backends, slow_events, stream=True, upstream_deadline_s=0.3)


async def test_a_body_over_the_limit_is_502(serve: Serve, backends: list) -> None:
    content = {"choices": [{"index": 0, "message": {"content": "x" * 300_000}}]}
    big = orjson.dumps(content)
    with pytest.raises(UpstreamUnavailable, match="larger than") as caught:
        await call(serve, backends, answering(json_head(len(big)), big),
                   upstream_max_response_bytes=100_000)
    assert caught.value.status_code == 502


async def test_a_head_over_the_limit_is_502(serve: Serve, backends: list) -> None:
    head = json_head(len(COMPLETION), b"X-Padding: " + b"p" * 200_000 + b"\r\n")
    with pytest.raises(UpstreamUnavailable, match="larger than"):
        await call(serve, backends, answering(head, COMPLETION), upstream_max_header_bytes=16_384)


async def test_a_stream_line_over_the_limit_is_502(serve: Serve, backends: list) -> None:
    line = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": "y" * 50_000}}]})
    with pytest.raises(UpstreamUnavailable, match="stream line over"):
        await call(serve, backends, answering(sse_head(), line), stream=True,
                   upstream_max_line_bytes=10_000)


@pytest.mark.parametrize(
    "payload",
    [{"choices": "x"}, [1, 2], "text", {"choices": [1]}, {"choices": [{"index": "0"}]},
     {"choices": [{"index": 0, "message": "hi"}]}, {"id": "no choices"}],
)
async def test_a_200_that_is_not_a_completion_is_502(
    serve: Serve, backends: list, payload: object
) -> None:
    body = orjson.dumps(payload)
    with pytest.raises(UpstreamUnavailable, match="cannot read") as caught:
        await call(serve, backends, answering(json_head(len(body)), body))
    assert caught.value.status_code == 502


@pytest.mark.parametrize("event", [b"[1]", b'{"choices": {"0": 1}}', b'{"choices": [{"delta": 5}]}'])
async def test_a_stream_event_that_is_not_a_chunk_is_502(
    serve: Serve, backends: list, event: bytes
) -> None:
    with pytest.raises(UpstreamUnavailable, match="cannot read"):
        await call(serve, backends, answering(sse_head(), b"data: " + event + b"\n\n"), stream=True)


@pytest.mark.parametrize("value", ["\ud800", 2**70])
async def test_a_body_json_cannot_carry_is_400_and_never_sent(
    serve: Serve, backends: list, value: object
) -> None:
    raw = await serve(answering(json_head(len(COMPLETION)), COMPLETION))
    backend = await backend_for(raw)
    backends.append(backend)
    with pytest.raises(BackendError) as caught:
        await backend.chat({**BODY, "seed": value})
    assert (caught.value.status_code, caught.value.error_type) == (400, "invalid_request_error")
    assert raw.connections == 0


async def test_the_evaluations_misalignment_judge_has_the_same_limits(serve: Serve, backends: list) -> None:
    """`conscience eval misalignment --eval-judge-url`: another server, the same bounds (it once
    got an UpstreamBackend built by hand, without the response limits or the deadline)."""
    from evaluation.backends import EvaluatedModels, rating_judge_backend
    from evaluation.settings import EvaluationSettings

    content = {"choices": [{"index": 0, "message": {"content": "x" * 300_000}}]}
    big = orjson.dumps(content)
    raw = await serve(answering(json_head(len(big)), big))
    settings = EvaluationSettings(
        upstream_url="http://127.0.0.1:9/v1", eval_judge_url=raw.url + "/v1", eval_judge_model="rater",
        upstream_connect_retries=0, upstream_max_response_bytes=100_000,
    )
    judge, model, owned = rating_judge_backend(settings, None, EvaluatedModels(policy="m", judge="m"))
    backends.append(judge)
    assert (model, owned, judge.url, judge.probe) == ("rater", True, raw.url + "/v1", None)
    with pytest.raises(UpstreamUnavailable, match="larger than"):
        await judge.chat(BODY)
