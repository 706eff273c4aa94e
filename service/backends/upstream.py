"""The backend over any OpenAI-compatible HTTP server: vLLM, llama.cpp, OpenAI itself.

One httpx client per backend, on the lean keep-alive transport of transport.py; bodies go out
and come back as orjson bytes. Only a connection that was never made is retried: once a
request may have reached the server, a retry could run a generation twice, so every later
failure goes straight to the caller as a BackendError. The API key lives in the client's
default headers and nowhere else: messages name the upstream by its URL without credentials,
and upstream text that echoes the key is scrubbed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from service.backends.base import (
    JSON,
    BackendError,
    LabelProbs,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.backends.labels import label_from_text, probs_from_top_logprobs
from service.backends.transport import KeepAliveTransport
from service.settings import Settings

log = logging.getLogger("conscience.upstream")

# vLLM's default --max-logprobs, and OpenAI's maximum.
VERDICT_TOP_LOGPROBS = 20
# Connection retries back off linearly from this: an upstream restarting gets a moment.
CONNECT_RETRY_DELAY_S = 0.05

_TIMEOUT_STAGES = {
    httpx.ConnectTimeout: "connecting",
    httpx.ReadTimeout: "waiting for an answer",
    httpx.WriteTimeout: "sending the request",
    httpx.PoolTimeout: "waiting for a free connection",
}


class UpstreamBackend:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        connect_retries: int = 2,
        max_connections: int = 256,
    ) -> None:
        self.url = str(httpx.URL(base_url).copy_with(userinfo=b"")).rstrip("/")
        self._secrets = [secret for secret in (api_key, httpx.URL(base_url).password) if secret]
        self._connect_retries = connect_retries
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=KeepAliveTransport(max_connections=max_connections),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamBackend:
        key = settings.upstream_api_key
        return cls(
            settings.upstream_url,
            api_key=key.get_secret_value() if key is not None else None,
            timeout_s=settings.upstream_timeout_s,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            connect_retries=settings.upstream_connect_retries,
            max_connections=settings.upstream_max_connections,
        )

    # --- the Backend protocol --------------------------------------------------------------

    async def chat(self, body: JSON) -> JSON:
        return await self._call("POST", "/chat/completions", _with_stream(body, False))

    def chat_stream(self, body: JSON) -> AsyncIterator[JSON]:
        return self._events("/chat/completions", _with_stream(body, True))

    async def completion(self, body: JSON) -> JSON:
        return await self._call("POST", "/completions", _with_stream(body, False))

    def completion_stream(self, body: JSON) -> AsyncIterator[JSON]:
        return self._events("/completions", _with_stream(body, True))

    async def embeddings(self, body: JSON) -> JSON:
        return await self._call("POST", "/embeddings", body)

    async def label_probs(
        self, model: str, messages: list[JSON], labels: Sequence[str]
    ) -> LabelProbs:
        response = await self.chat(
            {
                "model": model,
                "messages": messages,
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": VERDICT_TOP_LOGPROBS,
            }
        )
        choice = _first_choice(response)
        probs = probs_from_top_logprobs(_first_token_alternatives(choice), labels)
        if probs:
            return LabelProbs(probs, "logprobs")
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        label = label_from_text(text, labels) if isinstance(text, str) else None
        if label is None:
            raise BackendError("judge gave no verdict", status_code=502)
        return LabelProbs({label: 1.0}, "text")

    async def models(self) -> list[JSON]:
        payload = await self._call("GET", "/models")
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise UpstreamUnavailable(
                f"upstream at {self.url} answered /models without a data list"
            )
        return data

    async def start(self) -> None:
        """Nothing runs in the background here: the pool opens connections on demand."""

    async def check_ready(self) -> None:
        await self.models()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- HTTP ------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: JSON | None = None) -> Any:
        with self._translated_errors():
            response = await self._send(method, path, body, stream=False)
        if response.status_code >= 400:
            raise self._status_error(response.status_code, response.content)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable(
                f"upstream at {self.url} sent a body that is not JSON"
            ) from None

    async def _events(self, path: str, body: JSON) -> AsyncIterator[JSON]:
        """Server-sent events' `data:` payloads as JSON, until `[DONE]`."""
        with self._translated_errors():
            response = await self._send("POST", path, body, stream=True)
            try:
                if response.status_code >= 400:
                    raise self._status_error(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event/id fields
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    yield self._stream_chunk(data)
                raise UpstreamUnavailable(f"upstream at {self.url} ended the stream before [DONE]")
            finally:
                await response.aclose()

    async def _send(
        self, method: str, path: str, body: JSON | None, *, stream: bool
    ) -> httpx.Response:
        content = None if body is None else orjson.dumps(body)
        request = self._client.build_request(method, path, content=content)
        attempt = 0
        while True:
            try:
                return await self._client.send(request, stream=stream)
            except httpx.ConnectError as exc:
                attempt += 1
                if attempt > self._connect_retries:
                    raise UpstreamUnavailable(f"upstream unreachable at {self.url}") from exc
                log.warning(
                    "could not connect to upstream at %s; retry %d of %d",
                    self.url,
                    attempt,
                    self._connect_retries,
                )
                await asyncio.sleep(CONNECT_RETRY_DELAY_S * attempt)

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            stage = _TIMEOUT_STAGES.get(type(exc), "waiting")
            raise UpstreamTimeout(f"upstream at {self.url} timed out {stage}") from exc
        except httpx.HTTPError as exc:
            detail = self._scrub(str(exc)) or type(exc).__name__
            raise UpstreamUnavailable(f"upstream at {self.url} failed: {detail}") from exc

    def _stream_chunk(self, data: str) -> JSON:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable(
                f"upstream at {self.url} sent a stream event that is not JSON"
            ) from None
        error = chunk.get("error") if isinstance(chunk, dict) else None
        if error is not None:
            message, _, _, code = _error_fields(error, b"")
            raise BackendError(f"upstream failed mid-stream: {self._scrub(message)}", code=code)
        return chunk

    def _status_error(self, status: int, content: bytes) -> BackendError:
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        message, error_type, param, code = _error_fields(payload, content)
        message = self._scrub(message)
        if status >= 500:
            return UpstreamUnavailable(f"upstream error {status}: {message}", code=code)
        if status in (401, 403):
            # The upstream refused the proxy's own credentials: a server misconfiguration, not
            # the client's key, so the client must not be told its key is wrong.
            return UpstreamUnavailable(
                f"upstream refused the proxy's credentials ({status}); "
                "check CONSCIENCE_UPSTREAM_API_KEY",
                code="upstream_auth",
            )
        return UpstreamRejected(
            message,
            status_code=status,
            error_type=error_type or UpstreamRejected.error_type,
            param=param,
            code=code,
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _with_stream(body: JSON, stream: bool) -> JSON:
    return body if bool(body.get("stream")) is stream else {**body, "stream": stream}


def _error_fields(payload: Any, raw: bytes) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, param, code) from OpenAI's `{"error": {...}}` and the shapes servers
    use instead: `{"error": "text"}`, a top-level error object (older vLLM), `{"detail": ...}`."""
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, dict):
        return raw.decode(errors="replace")[:500] or "no error message", None, None, None
    message = error.get("message") or error.get("detail") or raw.decode(errors="replace")[:500]
    fields = (error.get("type"), error.get("param"), error.get("code"))
    error_type, param, code = (None if value is None else str(value) for value in fields)
    return str(message) or "no error message", error_type, param, code


def _first_choice(response: JSON) -> JSON:
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendError("judge gave no verdict", status_code=502)
    return choices[0]


def _first_token_alternatives(choice: JSON) -> list[tuple[str, float]]:
    """The first token's top_logprobs (or the token alone, from servers that give no
    alternatives) as (token, logprob); empty when the answer carries no logprobs."""
    try:
        first = choice["logprobs"]["content"][0]
        entries = first.get("top_logprobs") or [first]
        return [(entry["token"], float(entry["logprob"])) for entry in entries]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return []
