"""A scriptable fake of an OpenAI-compatible model server (vLLM flavour), over real loopback HTTP.

    with FakeUpstream(base_model="base-model") as up:   # up.url == "http://127.0.0.1:PORT/v1"
        up.policy_answer = "Sure: ..."                    # or a callable(body) -> str | list[str]
        up.judge = {"unethical": 0.9, "ethical": 0.1}     # or a callable(messages) -> dict
        up.label_tokens = PREFIX_LABEL_TOKENS             # verdict labels as "un"/"eth" tokens
        ...                                               # call it over HTTP
        assert up.calls("verdict")[0].body["top_logprobs"] == 20

The script attributes and how requests are told apart are in tests/fakes/script.py. Every
attribute is read per request, so a test may change the script while the server runs; `reset()`
restores the defaults and forgets requests and adapters (for a server shared by several tests).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import openai_wire as wire
from tests.fakes.openai_wire import JSON
from tests.fakes.script import Script, is_verdict, word_count
from tests.fakes.server import ThreadedServer

EMBEDDING_DIMENSIONS = 8
RequestKind = Literal["verdict", "generation", "other"]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str  # e.g. "/v1/chat/completions"
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON; None for an empty or unparsable body
    peer_port: int | None  # the client's port: one per connection, so it shows pooling

    @property
    def kind(self) -> RequestKind:
        if not self.path.endswith("/completions") or not isinstance(self.body, dict):
            return "other"
        if self.path.endswith("/chat/completions") and is_verdict(self.body):
            return "verdict"
        return "generation"


class FakeUpstream(Script):
    """The script (inherited attributes), the recorded requests, and the server."""

    def __init__(self, base_model: str = "base-model", *, port: int = 0) -> None:
        self.base_model = base_model
        self.requests: list[RecordedRequest] = []
        self.adapters: dict[str, str] = {}  # loaded LoRA name -> path
        self._routes: dict[tuple[str, str], Callable[[JSON], Response]] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._text_completion,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/load_lora_adapter"): self._load_adapter,
            ("POST", "/v1/unload_lora_adapter"): self._unload_adapter,
        }
        app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "DELETE"])]
        )
        self._server = ThreadedServer(
            app, port=port, lifespan="off", graceful_timeout_s=0.2
        )
        self.reset()

    def reset(self) -> None:
        self.reset_script()
        self.requests.clear()
        self.adapters.clear()

    def calls(self, kind: RequestKind) -> list[RecordedRequest]:
        return [request for request in self.requests if request.kind == kind]

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return self._server.origin

    @property
    def url(self) -> str:
        return f"{self._server.origin}/v1"

    def start(self) -> None:
        """Serve. Before this, `url` is already known but refuses connections."""
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- dispatch --------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        path = request.url.path
        if self.record_requests:
            peer_port = request.client.port if request.client else None
            self.requests.append(
                RecordedRequest(request.method, path, dict(request.headers), body, peer_port)
            )
        if self.hang:
            await asyncio.Event().wait()  # cancelled when the server stops
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if (
            self.api_key is not None
            and request.headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            return _error(
                401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"
            )
        if self.fail_status is not None:
            return self._scripted_failure(self.fail_status)
        route = self._routes.get((request.method, path))
        if route is None:
            return _error(404, f"Unknown route {request.method} {path}.", "NotFoundError", code=404)
        if request.method == "GET":
            return route({})
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.", "invalid_request_error")
        return route(body)

    def _scripted_failure(self, status: int) -> Response:
        error = self.fail_error or {
            "message": f"scripted failure {status}",
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": None,
        }
        return _json({"error": error}, status)

    def _unknown_model(self, body: JSON) -> Response | None:
        model = body.get("model")
        if self.known_models_only and model != self.base_model and model not in self.adapters:
            return _error(
                404,
                f"The model `{model}` does not exist.",
                "NotFoundError",
                param="model",
                code=404,
            )
        return None

    # --- completions -----------------------------------------------------------------------

    def _chat(self, body: JSON) -> Response:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(
                400,
                "'messages' must be a non-empty list.",
                "invalid_request_error",
                param="messages",
            )
        rejected = self._unknown_model(body)
        if rejected is not None:
            return rejected
        if is_verdict(body):
            choices = [self.verdict_choice(messages)] * (body.get("n") or 1)
        else:
            choices = self.generation_choices(body, self.base_model)
        top_n = self._top_n(body.get("logprobs"), body.get("top_logprobs") or 0)
        prompt_tokens = sum(word_count(message.get("content")) for message in messages)
        model = body.get("model", self.base_model)
        if body.get("stream"):
            chunks = wire.chat_chunks(
                model, choices, prompt_tokens, top_n, _include_usage(body), _continuous_usage(body)
            )
            return self._stream(chunks)
        return _json(wire.chat_completion(model, choices, prompt_tokens, top_n))

    def _text_completion(self, body: JSON) -> Response:
        prompt = body.get("prompt")
        if prompt is None:
            return _error(400, "'prompt' is required.", "invalid_request_error", param="prompt")
        rejected = self._unknown_model(body)
        if rejected is not None:
            return rejected
        choices = self.generation_choices(body, self.base_model)
        logprobs = body.get("logprobs")  # legacy: how many alternatives; 0 still asks for logprobs
        top_n = self._top_n(logprobs is not None and logprobs is not False, logprobs or 0)
        model = body.get("model", self.base_model)
        prompt_tokens = word_count(prompt)
        if body.get("stream"):
            chunks = wire.text_completion_chunks(
                model, choices, prompt_tokens, top_n, _include_usage(body)
            )
            return self._stream(chunks)
        return _json(wire.text_completion(model, choices, prompt_tokens, top_n))

    def _top_n(self, requested: Any, top_n: int) -> int | None:
        return int(top_n) if requested and self.logprobs_enabled else None

    def _stream(self, chunks: Iterable[JSON]) -> Response:
        events = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks]
        if self.stream_error_after is not None:
            failure = wire.error("scripted failure mid-stream", "server_error", code=500)
            events = [
                *events[: self.stream_error_after],
                b"data: " + orjson.dumps(failure) + b"\n\n",
            ]
        events.append(b"data: [DONE]\n\n")
        if not self.token_delay_s:
            return Response(b"".join(events), media_type="text/event-stream")
        delay = self.token_delay_s

        async def paced() -> Any:
            for event in events:
                yield event
                await asyncio.sleep(delay)

        return StreamingResponse(paced(), media_type="text/event-stream")

    # --- models, embeddings, adapters ------------------------------------------------------

    def _models(self, _: JSON) -> Response:
        entries = [(self.base_model, self.base_model, None)]
        entries += [(name, path, self.base_model) for name, path in self.adapters.items()]
        data = [
            {
                "id": model_id,
                "object": "model",
                "created": 0,
                "owned_by": "vllm",
                "root": root,
                "parent": parent,
                **({"max_model_len": self.max_model_len} if self.max_model_len else {}),
            }
            for model_id, root, parent in entries
        ]
        return _json({"object": "list", "data": data})

    def _embeddings(self, body: JSON) -> Response:
        if not self.embeddings_served:
            return _error(400, "The model does not support Embeddings API", "BadRequestError", code=400)
        inputs = body.get("input")
        if inputs is None and isinstance(body.get("messages"), list):  # vLLM's chat form
            inputs = "\n".join(f"{m.get('role')}: {m.get('content')}" for m in body["messages"])
        if inputs is None:
            return _error(400, "'input' is required.", "invalid_request_error", param="input")
        texts = [inputs] if isinstance(inputs, str) else [str(item) for item in inputs]
        data = [
            {"object": "embedding", "index": index, "embedding": (self.embedding or _embed)(text)}
            for index, text in enumerate(texts)
        ]
        tokens = sum(word_count(text) for text in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", self.base_model),
                "usage": usage,
            }
        )

    def _load_adapter(self, body: JSON) -> Response:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error(
                400,
                "Both 'lora_name' and 'lora_path' must be provided.",
                "InvalidUserInput",
                code=400,
            )
        if name in self.adapters:
            return _error(
                400,
                f"The lora adapter '{name}' has already been loaded.",
                "InvalidUserInput",
                code=400,
            )
        self.adapters[name] = path
        return Response(
            f"Success: LoRA adapter '{name}' added successfully.", media_type="text/plain"
        )

    def _unload_adapter(self, body: JSON) -> Response:
        name = body.get("lora_name")
        if not name:
            return _error(
                400,
                "'lora_name' needs to be provided to unload a LoRA adapter.",
                "InvalidUserInput",
                code=400,
            )
        if self.adapters.pop(name, None) is None:
            return _error(
                404, f"The lora adapter '{name}' cannot be found.", "NotFoundError", code=404
            )
        return Response(
            f"Success: LoRA adapter '{name}' removed successfully.", media_type="text/plain"
        )


def _include_usage(body: JSON) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def _continuous_usage(body: JSON) -> bool:
    return bool((body.get("stream_options") or {}).get("continuous_usage_stats"))


def _embed(text: str) -> list[float]:
    digest = hashlib.blake2b(text.encode(), digest_size=EMBEDDING_DIMENSIONS).digest()
    return [byte / 255.0 - 0.5 for byte in digest]


def _json(content: JSON, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _error(
    status: int, message: str, error_type: str, *, param: str | None = None, code: Any = None
) -> Response:
    return _json(wire.error(message, error_type, param=param, code=code), status)
