"""The backend over any OpenAI-compatible HTTP server: vLLM, llama.cpp, OpenAI itself.

httpx requests and responses on the lean keep-alive transport of transport.py (no httpx client:
`_request` and `_exchange` do the little of its work the proxy needs); bodies go out
and come back as orjson bytes. Only a connection that was never made is retried: once a
request may have reached the server, a retry could run a generation twice, so every later
failure goes straight to the caller as a BackendError. Every call is bounded: its whole
duration, the size of the response, its head and each stream line.

Clients are told what failed, never the upstream's address, its error text or anything it
echoes: that detail goes to the log (with the request id), scrubbed of the API key. Only a 4xx
passes its message through, scrubbed, since it describes the client's own request (say, a
prompt over the context length). The API key lives in the backend's default headers only.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from service.backends import shapes
from service.backends.correlation import outgoing_headers
from service.backends.labels import label_from_text, probs_from_top_logprobs
from service.backends.shapes import Part
from service.backends.transport import (
    DeadlineExceeded,
    KeepAliveTransport,
    ResponseLimits,
    ResponseTooLarge,
)
from service.conscience.usage import record as record_usage
from service.core.backend import (
    JSON,
    BackendError,
    LabelProbs,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.settings import Settings

log = logging.getLogger("conscience.upstream")

# vLLM's default --max-logprobs, and OpenAI's maximum.
VERDICT_TOP_LOGPROBS = 20
# Connection retries back off linearly from this: an upstream restarting gets a moment.
CONNECT_RETRY_DELAY_S = 0.05

_TIMEOUT_STAGES = {
    httpx.ConnectTimeout: "timed out connecting",
    httpx.ReadTimeout: "timed out waiting for an answer",
    httpx.WriteTimeout: "timed out receiving the request",
    httpx.PoolTimeout: "had no free connection in time",
    DeadlineExceeded: "did not finish the answer within the deadline",
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
        limits: ResponseLimits | None = None,
        max_line_bytes: int = 1024 * 1024,
    ) -> None:
        self.url = str(httpx.URL(base_url).copy_with(userinfo=b"")).rstrip("/")
        self._secrets = [secret for secret in (api_key, httpx.URL(base_url).password) if secret]
        self._connect_retries = connect_retries
        self._max_line_bytes = max_line_bytes
        self._base_url = _with_trailing_slash(httpx.URL(base_url))
        self._urls: dict[str, httpx.URL] = {}  # path -> the absolute URL, parsed once
        self._headers = _default_headers(self._base_url, api_key)
        self._extensions = {"timeout": httpx.Timeout(timeout_s, connect=connect_timeout_s).as_dict()}
        self._transport = KeepAliveTransport(max_connections=max_connections, limits=limits)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, url: str | None = None, api_key: SecretStr | None = None
    ) -> UpstreamBackend:
        """The upstream of `settings`, or (`url`, `api_key`) another server under the same
        timeouts and response limits (the evaluation's misalignment judge); a latent probe
        belongs to the upstream's model only."""
        key = settings.upstream.api_key if url is None else api_key
        backend = cls(
            settings.upstream.url if url is None else url,
            api_key=key.get_secret_value() if key is not None else None,
            timeout_s=settings.upstream.timeout_s,
            connect_timeout_s=settings.upstream.connect_timeout_s,
            connect_retries=settings.upstream.connect_retries,
            max_connections=settings.upstream.max_connections,
            limits=ResponseLimits(
                max_header_bytes=settings.upstream.max_header_bytes,
                max_body_bytes=settings.upstream.max_response_bytes,
                deadline_s=settings.upstream.deadline_s,
            ),
            max_line_bytes=settings.upstream.max_line_bytes,
        )
        if url is None:
            backend.probe, backend.embeddings_model = upstream_probe(settings), settings.judge.embeddings_model
        return backend

    # --- the Backend protocol --------------------------------------------------------------

    async def chat(self, body: JSON) -> JSON:
        payload = await self._call("POST", "/chat/completions", _with_stream(body, False))
        return self._outlined(payload, "message")

    def chat_stream(self, body: JSON) -> AsyncIterator[JSON]:
        return self._events("/chat/completions", _with_stream(body, True), "delta")

    async def completion(self, body: JSON) -> JSON:
        payload = await self._call("POST", "/completions", _with_stream(body, False))
        return self._outlined(payload, "text")

    def completion_stream(self, body: JSON) -> AsyncIterator[JSON]:
        return self._events("/completions", _with_stream(body, True), "text")

    async def embeddings(self, body: JSON) -> JSON:
        return await self._call("POST", "/embeddings", body)

    # The latent verdict (judge_style latent) through an embeddings endpoint; None: not configured.
    probe: Any = None
    embeddings_model: str | None = None

    async def latent_score(self, messages: list[JSON], answer: str) -> float:
        """The probe's P(unethical) for `answer`, read from the embeddings endpoint's mean-pooled
        final hidden state over the ordinary chat (the answer as the assistant's open last turn:
        vLLM's chat form of /v1/embeddings, `continue_final_message`), scaled to unit length."""
        if self.probe is None or self.embeddings_model is None:
            raise BackendError("no embeddings model and probe are configured for the latent verdict")
        payload = await self._call("POST", "/embeddings", latent_embedding_body(
            self.embeddings_model, messages, answer
        ))
        record_usage("judge", payload.get("usage"))
        try:
            vector = [float(value) for value in payload["data"][0]["embedding"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise UpstreamUnavailable(f"the embeddings endpoint gave no embedding: {exc!r}") from None
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        return float(self.probe.score([value / norm for value in vector]))

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
            return LabelProbs(probs, "logprobs", response.get("usage"))
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        label = label_from_text(text, labels) if isinstance(text, str) else None
        if label is None:
            raise BackendError("judge gave no verdict", status_code=502)
        return LabelProbs({label: 1.0}, "text", response.get("usage"))

    async def models(self) -> list[JSON]:
        payload = await self._call("GET", "/models")
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise self._failure(
                "The model server answered /models without a list of models.",
                f"/models sent {type(payload).__name__} {self._excerpt(payload)}",
            )
        return data

    async def start(self) -> None:
        """Nothing runs in the background here: the pool opens connections on demand."""

    async def check_ready(self) -> None:
        await self.models()

    async def aclose(self) -> None:
        await self._transport.aclose()

    # --- HTTP ------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: JSON | None = None) -> Any:
        with self._translated_errors():
            response = await self._send(method, path, body, stream=False)
        if response.status_code >= 400:
            raise self._status_error(response.status_code, response.content)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self._failure(
                "The model server sent a body that is not JSON.",
                f"{path} answered {self._excerpt(response.content)}",
            ) from None

    async def _events(self, path: str, body: JSON, part: Part) -> AsyncIterator[JSON]:
        """Server-sent events' `data:` payloads as JSON, until `[DONE]`."""
        with self._translated_errors():
            response = await self._send("POST", path, body, stream=True)
            try:
                if response.status_code >= 400:
                    raise self._status_error(response.status_code, await response.aread())
                async for line in _lines(response.aiter_bytes(), self._max_line_bytes):
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments, event/id fields
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    yield self._stream_chunk(data, part)
                raise self._failure("The model server ended the stream early.", "no [DONE]")
            finally:
                await response.aclose()

    async def _send(
        self, method: str, path: str, body: JSON | None, *, stream: bool
    ) -> httpx.Response:
        try:
            content = None if body is None else orjson.dumps(body)
        except orjson.JSONEncodeError as exc:
            # A lone surrogate ("\ud800" in the request's JSON) is not Unicode text, and an
            # integer past 64 bits no model server reads: the request's fault, not ours.
            raise BackendError(
                f"The request cannot be sent on: {exc}.",
                status_code=400, error_type="invalid_request_error",
            ) from None
        request = self._request(method, path, content)
        attempt = 0
        while True:
            try:
                return await self._exchange(request, stream=stream)
            except httpx.ConnectError as exc:
                attempt += 1
                if attempt > self._connect_retries:
                    raise self._failure(
                        "The model server is unreachable.", self._scrub(str(exc))
                    ) from exc
                log.warning(
                    "could not connect to upstream at %s; retry %d of %d",
                    self.url,
                    attempt,
                    self._connect_retries,
                )
                await asyncio.sleep(CONNECT_RETRY_DELAY_S * attempt)

    def _request(self, method: str, path: str, content: bytes | None) -> httpx.Request:
        """What `httpx.AsyncClient.build_request` would build (the client's headers, the
        correlation headers, the timeouts) without re-parsing and re-merging the base URL and
        the default headers on every call: that alone was an eighth of the proxy's CPU time."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._base_url.copy_with(
                raw_path=self._base_url.raw_path + path.lstrip("/").encode("ascii")
            )
        headers = [*self._headers, *((name.encode(), value.encode()) for name, value in outgoing_headers().items())]
        return httpx.Request(method, url, headers=headers, content=content, extensions=self._extensions)

    async def _exchange(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        """`AsyncClient.send` without what the proxy has no use for: no redirects are followed
        (as before), no auth flow (the key is a default header) and no cookie jar, so a cookie
        one upstream response sets is never sent with another client's request."""
        response = await self._transport.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            stage = _TIMEOUT_STAGES.get(type(exc), "timed out")
            raise self._failure(
                f"The model server {stage}.", self._scrub(str(exc)), UpstreamTimeout
            ) from exc
        except ResponseTooLarge as exc:
            raise self._failure(
                "The model server sent a response larger than this proxy accepts.", str(exc)
            ) from exc
        except httpx.HTTPError as exc:
            detail = self._scrub(str(exc)) or type(exc).__name__
            raise self._failure("The connection to the model server failed.", detail) from exc

    def _outlined(self, payload: Any, part: Part, *, chunk: bool = False) -> JSON:
        try:
            return shapes.completion(payload, part, chunk=chunk)
        except shapes.UnexpectedShape as exc:
            log.warning("%s (upstream %s sent %s)", exc.message, self.url, self._excerpt(payload))
            raise

    def _stream_chunk(self, data: bytes, part: Part) -> JSON:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._failure(
                "The model server sent a stream event that is not JSON.", self._excerpt(data)
            ) from None
        error = chunk.get("error") if isinstance(chunk, dict) else None
        if error is not None:
            message, _, _, code = _error_fields(error, b"")
            raise self._failure(
                "The model server failed mid-stream.", f"error event ({code}): {message}"
            )
        return self._outlined(chunk, part, chunk=True)

    def _status_error(self, status: int, content: bytes) -> BackendError:
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        message, error_type, param, code = _error_fields(payload, content)
        message = self._scrub(message)
        if status >= 500:
            return self._failure(
                f"The model server failed (HTTP {status}).", f"{status} ({code}): {message}"
            )
        if status in (401, 403):
            # The upstream refused the proxy's own credentials: a server misconfiguration, not
            # the client's key, so the client must not be told its key is wrong.
            return self._failure(
                "The model server refused this proxy's credentials.",
                f"{status}: {message}; check CONSCIENCE_UPSTREAM__API_KEY",
                code="upstream_auth",
            )
        return UpstreamRejected(
            message,
            status_code=status,
            error_type=error_type or UpstreamRejected.error_type,
            param=param,
            code=code,
        )

    def _failure(
        self,
        message: str,
        detail: str,
        error: type[BackendError] = UpstreamUnavailable,
        *,
        code: str | None = None,
    ) -> BackendError:
        """`message` for the client; `detail` (the upstream's words) only in the log."""
        log.warning("%s (upstream %s: %s)", message, self.url, self._scrub(detail))
        return error(message, code=code)

    def _excerpt(self, value: Any) -> str:
        """A short, scrubbed sample of what the upstream sent, for the log."""
        text = value.decode(errors="replace") if isinstance(value, bytes) else repr(value)
        return self._scrub(text[:200])

    def _scrub(self, text: str) -> str:
        for secret in [*self._secrets, self.url]:
            text = text.replace(secret, "***")
        return text


async def _lines(chunks: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[bytes]:
    """The lines of an event stream, without their ends; a line (or the unfinished one) longer
    than `max_line_bytes` is a 502 rather than a buffer that grows without bound."""
    pending = b""
    async for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in [*lines, pending]:
            if len(line) > max_line_bytes:
                raise UpstreamUnavailable(
                    f"The model server sent a stream line over {max_line_bytes} bytes."
                )
        for line in lines:
            yield line.removesuffix(b"\r")
    if pending:
        yield pending.removesuffix(b"\r")


def _with_trailing_slash(url: httpx.URL) -> httpx.URL:
    """The base URL as httpx's client merges paths onto it: `/v1` + `chat/completions`."""
    return url if url.raw_path.endswith(b"/") else url.copy_with(raw_path=url.raw_path + b"/")


def _default_headers(base_url: httpx.URL, api_key: str | None) -> list[tuple[bytes, bytes]]:
    """Every call's fixed headers, encoded once: httpx's client defaults and ours. Credentials
    in the URL (`http://user:pass@host`) are sent as Basic auth, as httpx's client sends them
    (in place of the API key's bearer token)."""
    headers = httpx.Headers({
        "accept": "*/*",
        "accept-encoding": "gzip, deflate",
        "connection": "keep-alive",
        "user-agent": f"python-httpx/{httpx.__version__}",
        "content-type": "application/json",
    })
    if base_url.username or base_url.password:
        credentials = f"{base_url.username}:{base_url.password}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    elif api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers.raw


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


def latent_embedding_body(model: str, messages: list[JSON], answer: str) -> JSON:
    """The embeddings request of a latent verdict: the conversation, then the answer as the
    assistant's last turn left open (as the probe was fitted: no end-of-turn token)."""
    chat = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    return {
        "model": model,
        "messages": [*chat, {"role": "assistant", "content": answer}],
        "add_generation_prompt": False,
        "continue_final_message": True,
        "encoding_format": "float",
    }


def upstream_probe(settings: Settings) -> Any:
    """The latent probe of the upstream backend: --probe-path, else the shipped final-layer probe
    whose model name is the embeddings model's (its last path part, lower case). The fingerprint
    cannot be checked upstream: the probe must have been fitted for the served base model."""
    if settings.judge.embeddings_model is None:
        return None
    from service.conscience.probe import SHIPPED_DIR, load_probe

    if settings.judge.probe_path is not None:
        return load_probe(settings.judge.probe_path)
    path = SHIPPED_DIR / "embeddings" / f"{settings.judge.embeddings_model.rsplit('/', 1)[-1].lower()}.json"
    return load_probe(path) if path.is_file() else None
