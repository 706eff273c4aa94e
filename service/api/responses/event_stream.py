"""Chat completion chunks in, the Responses event sequence out.

`ResponsesStream` numbers the events (`response.created` … `response.completed`, or
`response.incomplete` after a finish reason `length` or `content_filter`); the final event's
response carries the `conscience` object of the chat stream's last chunk. `response_events`
drives it over the checked chat serving's chunks (data, never parsed back from SSE).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from service.api.responses.chat_response import (
    dumped,
    echoed_settings,
    new_id,
    reasoning_of,
    response_status,
    response_usage,
)
from service.api.responses.protocol import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    ErrorEvent,
    FunctionCall,
    LifecycleEvent,
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
    ResponsesRequest,
    ResponseStatus,
)

JSON = dict[str, Any]


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
        self._id = response_id or new_id("resp")
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
        return dumped(event)

    def _response(self, status: ResponseStatus, **fields: Any) -> JSON:
        return {
            **echoed_settings(self._request), "id": self._id, "created_at": self._created_at,
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
            reasoning = reasoning_of(delta)
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
        status, incomplete = response_status(self._finish_reason)
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
            usage=response_usage(self._usage), incomplete_details=incomplete, conscience=self._conscience,
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
        item = _Item(kind, new_id("rs" if kind == "reasoning" else "msg"), len(self._items))
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
            item = _Item("function_call", new_id("fc"), len(self._items),
                         call_id=call.get("id") or new_id("call"), name=function.get("name") or "")
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
