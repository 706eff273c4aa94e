"""A chat completion as a Responses `response` object, and what the event stream shares with it.

`response_from_chat(completion, request)`: a chat completion (its first choice: a Responses
request asks for one) as a `response` object: `reasoning`, `message` and `function_call` output
items, usage in input/output tokens, the `conscience` object passed on. A finish reason
`length` or `content_filter` (a refusal: no repair passed) makes the response `incomplete`
with that reason, as OpenAI does.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from pydantic import BaseModel

from service.api.responses.protocol import (
    FunctionCall,
    IncompleteDetails,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningItem,
    ReasoningText,
    ResponseObject,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
)

JSON = dict[str, Any]
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def echoed_settings(request: ResponsesRequest) -> JSON:
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


def response_usage(usage: JSON | None) -> ResponseUsage | None:
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


def response_status(finish_reason: str | None) -> tuple[ResponseStatus, IncompleteDetails | None]:
    reason = _INCOMPLETE.get(finish_reason or "")
    if reason is None:
        return "completed", None
    return "incomplete", IncompleteDetails.model_validate({"reason": reason})


def reasoning_of(message: JSON) -> str | None:
    """vLLM's reasoning parsers send `reasoning_content`, newer releases `reasoning`; some both."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str):
            return str(message[key])
    return None


def dumped(model: BaseModel) -> JSON:
    return model.model_dump(mode="json", by_alias=True)


def response_from_chat(completion: JSON, request: ResponsesRequest, *, response_id: str | None = None) -> JSON:
    """The `response` object for a (checked) chat completion."""
    choices = sorted(completion.get("choices") or [], key=lambda c: c.get("index", 0))
    choice = choices[0] if choices else {}
    message = choice.get("message") or {}
    status, incomplete = response_status(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    output: list[OutputItem] = []
    reasoning = reasoning_of(message)
    if reasoning:
        output.append(ReasoningItem(id=new_id("rs"), content=[ReasoningText(text=reasoning)], status=item_status))
    text = "".join(s for s in (message.get("content"), message.get("refusal")) if isinstance(s, str))
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    if text or not calls:
        output.append(OutputMessage(id=new_id("msg"), status=item_status, content=[OutputText(text=text)]))
    for call in calls:
        function = call.get("function") or {}
        output.append(FunctionCall(
            id=new_id("fc"), call_id=call.get("id") or new_id("call"), name=function.get("name") or "",
            arguments=function.get("arguments") or "", status=item_status,
        ))
    response = ResponseObject.model_validate({
        **echoed_settings(request),
        "id": response_id or new_id("resp"),
        "created_at": completion.get("created") or int(time.time()),
        "status": status,
        "model": completion.get("model") or request.model or "",
        "output": output,
        "usage": response_usage(completion.get("usage")),
        "incomplete_details": incomplete,
        "conscience": completion.get("conscience"),
    })
    return dumped(response)
