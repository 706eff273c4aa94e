"""The Responses API as a translation over chat completions, both ways.

- `chat_request(request)`: a Responses request as the chat completions body that the checked
  chat serving takes (`conscience` options included, `stream_options.include_usage` on a
  stream, so that the final event can carry usage).
- `response_from_chat(completion, request)`: a chat completion (its first choice: a Responses
  request asks for one) as a `response` object: `reasoning`, `message` and `function_call`
  output items, usage in input/output tokens, the `conscience` object passed on.
- `ResponsesStream`: chat completion chunks in, the Responses event sequence out
  (`response.created` … `response.completed`), numbered; the final event's response carries
  the `conscience` object of the chat stream's last chunk. `response_events` drives it over an
  async iterator, and `chat_chunks_from_sse` reads chunks back from a chat SSE body, so that a
  route can wrap the chat serving's streaming response as it is.

A finish reason `length` or `content_filter` (a refusal: no repair passed) makes the response
`incomplete` with that reason, and its final event `response.incomplete`, as OpenAI does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from service.api.responses.protocol import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    ErrorEvent,
    FunctionCall,
    FunctionCallItem,
    FunctionCallOutputItem,
    IncompleteDetails,
    InputImage,
    LifecycleEvent,
    MessageItem,
    OutputItem,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    ReasoningItem,
    ReasoningText,
    ReasoningTextDeltaEvent,
    ReasoningTextDoneEvent,
    ResponseError,
    ResponseObject,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
    ToolChoiceFunction,
)

JSON = dict[str, Any]
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_SSE_DONE = b"[DONE]"


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# --- request -----------------------------------------------------------------------------------


def _content(content: str | list[Any]) -> str | list[JSON]:
    """Chat content: one string when every part is text (what any chat template reads)."""
    if isinstance(content, str):
        return content
    if not any(isinstance(part, InputImage) for part in content):
        return "".join(part.refusal if part.type == "refusal" else part.text for part in content)
    parts: list[JSON] = []
    for part in content:
        if isinstance(part, InputImage):
            parts.append({"type": "image_url", "image_url": {"url": part.image_url, "detail": part.detail}})
        else:
            parts.append({"type": "text", "text": part.refusal if part.type == "refusal" else part.text})
    return parts


def _messages(request: ResponsesRequest) -> list[JSON]:
    messages: list[JSON] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
        return messages
    for item in request.input:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": _content(item.content)})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            # Calls of one turn belong to one assistant message, which their outputs follow.
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        # reasoning items: chat completions take no reasoning back
    return messages


def _tool_choice(choice: str | ToolChoiceFunction) -> str | JSON:
    if isinstance(choice, ToolChoiceFunction):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def chat_request(request: ResponsesRequest) -> JSON:
    """The chat completions body for `request`; validate it as a chat request before use."""
    body: JSON = {"messages": _messages(request), "stream": request.stream}
    if request.model is not None:
        body["model"] = request.model
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    for source, target in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                           ("top_p", "top_p"), ("parallel_tool_calls", "parallel_tool_calls"),
                           ("user", "user")):
        value = getattr(request, source)
        if value is not None:
            body[target] = value
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
            for tool in request.tools
        ]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if request.text is not None and request.text.format.type != "text":
        form = request.text.format
        if form.type == "json_object":
            body["response_format"] = {"type": "json_object"}
        else:
            schema = form.model_dump(exclude={"type"}, exclude_none=True, by_alias=True)
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
    if request.conscience is not None:
        body["conscience"] = request.conscience.model_dump(exclude_none=True)
    return body


# --- response ----------------------------------------------------------------------------------


def _echo(request: ResponsesRequest) -> JSON:
    """The request's settings, as a response shows them."""
    echoed: JSON = {
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tools": request.tools or [],
        "metadata": request.metadata or {},
    }
    if request.tool_choice is not None:
        echoed["tool_choice"] = request.tool_choice
    if request.parallel_tool_calls is not None:
        echoed["parallel_tool_calls"] = request.parallel_tool_calls
    if request.text is not None:
        echoed["text"] = request.text
    return echoed


def _usage(usage: JSON | None) -> ResponseUsage | None:
    if not usage:
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return ResponseUsage.model_validate({
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    })


def _status(finish_reason: str | None) -> tuple[ResponseStatus, IncompleteDetails | None]:
    reason = _INCOMPLETE.get(finish_reason or "")
    if reason is None:
        return "completed", None
    return "incomplete", IncompleteDetails.model_validate({"reason": reason})


def _reasoning(message: JSON) -> str | None:
    """vLLM's reasoning parsers send `reasoning_content`, newer releases `reasoning`; some both."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str):
            return str(message[key])
    return None


def _dump(model: BaseModel) -> JSON:
    return model.model_dump(mode="json", by_alias=True)


def response_from_chat(completion: JSON, request: ResponsesRequest, *, response_id: str | None = None) -> JSON:
    """The `response` object for a (checked) chat completion."""
    choices = sorted(completion.get("choices") or [], key=lambda c: c.get("index", 0))
    choice = choices[0] if choices else {}
    message = choice.get("message") or {}
    status, incomplete = _status(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    output: list[OutputItem] = []
    reasoning = _reasoning(message)
    if reasoning:
        output.append(ReasoningItem(id=_id("rs"), content=[ReasoningText(text=reasoning)], status=item_status))
    text = "".join(s for s in (message.get("content"), message.get("refusal")) if isinstance(s, str))
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    if text or not calls:
        output.append(OutputMessage(id=_id("msg"), status=item_status, content=[OutputText(text=text)]))
    for call in calls:
        function = call.get("function") or {}
        output.append(FunctionCall(
            id=_id("fc"), call_id=call.get("id") or _id("call"), name=function.get("name") or "",
            arguments=function.get("arguments") or "", status=item_status,
        ))
    response = ResponseObject.model_validate({
        **_echo(request),
        "id": response_id or _id("resp"),
        "created_at": completion.get("created") or int(time.time()),
        "status": status,
        "model": completion.get("model") or request.model or "",
        "output": output,
        "usage": _usage(completion.get("usage")),
        "incomplete_details": incomplete,
        "conscience": completion.get("conscience"),
    })
    return _dump(response)


# --- stream ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """An output item being streamed."""

    kind: Literal["reasoning", "message", "function_call"]
    id: str
    output_index: int
    text: str = ""  # the reasoning or message text, or a call's arguments
    call_id: str = ""
    name: str = ""
    done: bool = False
    final: OutputItem | None = field(default=None)


class ResponsesStream:
    """One Responses stream: `start()`, then `feed(chunk)` per chat chunk, then `finish()`.

    Each returns the events to send, in order. A chunk with an `error` (the chat stream's
    mid-stream failure) ends the stream with an `error` event and `response.failed`.
    """

    def __init__(self, request: ResponsesRequest, *, response_id: str | None = None) -> None:
        self._request = request
        self._id = response_id or _id("resp")
        self._created_at = int(time.time())
        self._model = request.model or ""
        self._sequence = 0
        self._items: list[_Item] = []
        self._text: _Item | None = None  # the open reasoning or message item
        self._calls: dict[Any, _Item] = {}  # open function calls by the chat tool call index
        self._finish_reason: str | None = None
        self._usage: JSON | None = None
        self._conscience: JSON | None = None
        self.ended = False

    # --- events ----------------------------------------------------------------------------
    def _event(self, model: type[BaseModel], **fields: Any) -> JSON:
        event = model.model_validate({**fields, "sequence_number": self._sequence})
        self._sequence += 1
        return _dump(event)

    def _response(self, status: ResponseStatus, **fields: Any) -> JSON:
        return {
            **_echo(self._request), "id": self._id, "created_at": self._created_at,
            "status": status, "model": self._model, **fields,
        }

    def start(self) -> list[JSON]:
        snapshot = self._response("in_progress")
        return [
            self._event(LifecycleEvent, type="response.created", response=snapshot),
            self._event(LifecycleEvent, type="response.in_progress", response=snapshot),
        ]

    def feed(self, chunk: JSON) -> list[JSON]:
        if self.ended:
            return []
        if isinstance(chunk.get("error"), dict):
            return self.fail(chunk["error"])
        self._model = chunk.get("model") or self._model
        self._usage = chunk.get("usage") or self._usage
        self._conscience = chunk.get("conscience") or self._conscience
        events: list[JSON] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # a Responses request asks for one choice
            delta = choice.get("delta") or {}
            reasoning = _reasoning(delta)
            if reasoning:
                events += self._text_delta("reasoning", reasoning)
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str) and delta[key]:
                    events += self._text_delta("message", delta[key])
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    events += self._call_delta(call)
            self._finish_reason = choice.get("finish_reason") or self._finish_reason
        return events

    def finish(self) -> list[JSON]:
        if self.ended:
            return []
        status, incomplete = _status(self._finish_reason)
        item_status = "completed" if status == "completed" else "incomplete"
        events: list[JSON] = []
        if not self._items:  # an empty answer is an empty message, as in the non-stream form
            events += self._open("message")
        events += self._close_text(item_status)
        for call in list(self._calls.values()):
            events += self._close_call(call, item_status)
        self.ended = True
        final = self._response(
            status,
            output=[item.final for item in sorted(self._items, key=lambda i: i.output_index)],
            usage=_usage(self._usage), incomplete_details=incomplete, conscience=self._conscience,
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(LifecycleEvent, type=kind, response=final))
        return events

    def fail(self, error: JSON) -> list[JSON]:
        """The chat stream failed: say why, and end the response as failed."""
        self.ended = True
        message = str(error.get("message") or "the model server failed")
        code = "rate_limit_exceeded" if error.get("type") == "rate_limit_error" else "server_error"
        failed = self._response(
            "failed", error=ResponseError(code=code, message=message),
            output=[item.final for item in self._items if item.final is not None],
            conscience=self._conscience,
        )
        return [
            self._event(ErrorEvent, code=error.get("code") and str(error["code"]), message=message,
                        param=error.get("param")),
            self._event(LifecycleEvent, type="response.failed", response=failed),
        ]

    # --- items -----------------------------------------------------------------------------
    def _open(self, kind: Literal["reasoning", "message"]) -> list[JSON]:
        item = _Item(kind, _id("rs" if kind == "reasoning" else "msg"), len(self._items))
        self._items.append(item)
        self._text = item
        if kind == "reasoning":
            added: OutputItem = ReasoningItem(id=item.id, content=[], status="in_progress")
            part: BaseModel = ReasoningText(text="")
        else:
            added = OutputMessage(id=item.id, status="in_progress", content=[])
            part = OutputText(text="")
        return [
            self._event(OutputItemEvent, type="response.output_item.added", output_index=item.output_index,
                        item=added),
            self._event(ContentPartEvent, type="response.content_part.added", item_id=item.id,
                        output_index=item.output_index, content_index=0, part=part),
        ]

    def _text_delta(self, kind: Literal["reasoning", "message"], text: str) -> list[JSON]:
        events: list[JSON] = []
        if self._text is None or self._text.kind != kind:
            events += self._close_text("completed")
            events += self._open(kind)
        item = self._text
        assert item is not None
        item.text += text
        delta_event = ReasoningTextDeltaEvent if kind == "reasoning" else OutputTextDeltaEvent
        events.append(self._event(delta_event, item_id=item.id, output_index=item.output_index,
                                  content_index=0, delta=text))
        return events

    def _close_text(self, status: Literal["completed", "incomplete"]) -> list[JSON]:
        item, self._text = self._text, None
        if item is None:
            return []
        where = {"item_id": item.id, "output_index": item.output_index, "content_index": 0}
        if item.kind == "reasoning":
            part: BaseModel = ReasoningText(text=item.text)
            done = self._event(ReasoningTextDoneEvent, **where, text=item.text)
            item.final = ReasoningItem(id=item.id, content=[ReasoningText(text=item.text)], status=status)
        else:
            part = OutputText(text=item.text)
            done = self._event(OutputTextDoneEvent, **where, text=item.text)
            item.final = OutputMessage(id=item.id, status=status, content=[OutputText(text=item.text)])
        return [
            done,
            self._event(ContentPartEvent, type="response.content_part.done", **where, part=part),
            self._event(OutputItemEvent, type="response.output_item.done", output_index=item.output_index,
                        item=item.final),
        ]

    def _call_delta(self, call: JSON) -> list[JSON]:
        events: list[JSON] = []
        function = call.get("function") or {}
        index = call.get("index", 0)
        item = self._calls.get(index)
        if item is None:
            events += self._close_text("completed")
            item = _Item("function_call", _id("fc"), len(self._items),
                         call_id=call.get("id") or _id("call"), name=function.get("name") or "")
            self._items.append(item)
            self._calls[index] = item
            added = FunctionCall(id=item.id, call_id=item.call_id, name=item.name, arguments="",
                                 status="in_progress")
            events.append(self._event(OutputItemEvent, type="response.output_item.added",
                                      output_index=item.output_index, item=added))
        elif function.get("name"):
            item.name += function["name"]  # a name sent in pieces
        arguments = function.get("arguments") or ""
        if arguments:
            item.text += arguments
            events.append(self._event(ArgumentsDeltaEvent, item_id=item.id, output_index=item.output_index,
                                      delta=arguments))
        return events

    def _close_call(self, item: _Item, status: Literal["completed", "incomplete"]) -> list[JSON]:
        item.final = FunctionCall(id=item.id, call_id=item.call_id, name=item.name, arguments=item.text,
                                  status=status)
        return [
            self._event(ArgumentsDoneEvent, item_id=item.id, output_index=item.output_index, name=item.name,
                        arguments=item.text),
            self._event(OutputItemEvent, type="response.output_item.done", output_index=item.output_index,
                        item=item.final),
        ]


async def response_events(
    chunks: AsyncIterable[JSON], request: ResponsesRequest, *, response_id: str | None = None
) -> AsyncIterator[JSON]:
    """The Responses events for a chat completion stream."""
    stream = ResponsesStream(request, response_id=response_id)
    for event in stream.start():
        yield event
    async for chunk in chunks:
        for event in stream.feed(chunk):
            yield event
        if stream.ended:
            return
    for event in stream.finish():
        yield event


def sse_event(event: JSON) -> bytes:
    """One event as OpenAI sends it: named, then its JSON (no `[DONE]` ends a Responses stream)."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def chat_chunks_from_sse(body: AsyncIterable[bytes | str]) -> AsyncIterator[JSON]:
    """The chunks of a chat completion SSE body, up to `[DONE]`."""
    buffer = b""
    async for piece in body:
        buffer += piece.encode() if isinstance(piece, str) else piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
            if data == _SSE_DONE:
                return
            if data:
                yield orjson.loads(data)
