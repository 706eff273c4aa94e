"""A Responses request as the chat completions body that the checked chat serving takes:
instructions and input items as messages, tools and text formats in chat's shape, the
`conscience` options passed on, `stream_options.include_usage` on a stream (so that the final
event can carry usage)."""

from __future__ import annotations

from typing import Any

from service.api.responses.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputImage,
    MessageItem,
    ResponsesRequest,
    ToolChoiceFunction,
)

JSON = dict[str, Any]


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
