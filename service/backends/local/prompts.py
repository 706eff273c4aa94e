"""Turn OpenAI request bodies into prompt token ids with the model's own chat template."""

from __future__ import annotations

import json
from typing import Any

from service.core.backend import JSON, BackendError


def invalid(message: str, param: str | None = None) -> BackendError:
    return BackendError(
        message, status_code=400, error_type="invalid_request_error", param=param
    )


def context_room(prompt_len: int, context_len: int, param: str) -> int:
    """Tokens left for the answer; a prompt that leaves none is the client's error."""
    room = context_len - prompt_len
    if room < 1:
        error = invalid(
            f"the prompt has {prompt_len} tokens; the model's context holds {context_len}", param
        )
        error.code = "context_length_exceeded"
        raise error
    return room


def _text_content(content: Any, index: int) -> str:
    """Message content as plain text: a string, or a list of `text` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid(
                    "the local backend accepts only text content parts",
                    f"messages[{index}].content",
                )
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise invalid("content must be a string or a list of parts", f"messages[{index}].content")


def _template_calls(calls: Any, index: int) -> list[JSON]:
    """An assistant message's calls as chat templates read them: `arguments` as an object
    (OpenAI sends a JSON string; Qwen's template writes it with `tojson`), as vLLM passes them."""
    if not isinstance(calls, list):
        raise invalid("tool_calls must be a list", f"messages[{index}].tool_calls")
    read = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid("each tool call needs a function with a name", f"messages[{index}].tool_calls")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise invalid(f"tool call arguments must be JSON: {exc}", f"messages[{index}].tool_calls") from exc
        read.append({"id": call.get("id"), "type": "function",
                     "function": {"name": function["name"], "arguments": arguments}})
    return read


def plain_messages(messages: Any) -> list[JSON]:
    """Role and text of each message; an assistant's `tool_calls` and a tool answer's
    `tool_call_id` are kept for templates that render them (the calls' arguments as objects)."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list", "messages")
    plain = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise invalid("each message needs a string role", f"messages[{index}]")
        item: JSON = {"role": message["role"], "content": _text_content(message.get("content"), index)}
        if message.get("tool_calls"):
            item["tool_calls"] = _template_calls(message["tool_calls"], index)
        if isinstance(message.get("tool_call_id"), str):
            item["tool_call_id"] = message["tool_call_id"]
        plain.append(item)
    return plain


def chat_text(
    tokenizer: Any, messages: list[JSON], *, generation_prompt: bool, continue_final: bool = False,
    tools: list[JSON] | None = None,
) -> str:
    """`continue_final`: the last (assistant) message is left open, to be continued (vLLM's
    `continue_final_message`), instead of a new assistant turn being started. `tools`: shown to
    the model by its template (Qwen2.5's lists them in the system turn)."""
    try:
        if continue_final:
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=False, continue_final_message=True,
                tools=tools,
            )
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt, tools=tools
        )
    except Exception as exc:  # jinja raises for conversations a template refuses
        raise invalid(f"the model's chat template rejected the messages: {exc}", "messages") from exc


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of already templated text (templates carry their own special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_prompt_ids(
    tokenizer: Any, body: JSON, *, tools: list[JSON] | None = None, answer_start: str = ""
) -> list[int]:
    """`answer_start`: text written for the model at the start of its answer (a forced call)."""
    messages = plain_messages(body.get("messages"))
    continue_final = bool(body.get("continue_final_message")) and messages[-1]["role"] == "assistant"
    if tools and not _template_takes_tools(tokenizer):
        raise invalid("the local model's chat template does not render tools", "tools")
    text = chat_text(
        tokenizer, messages, generation_prompt=not continue_final, continue_final=continue_final, tools=tools
    )
    return encode(tokenizer, text + answer_start)


def _template_takes_tools(tokenizer: Any) -> bool:
    """Whether the chat template reads `tools` at all; one that does not would silently drop them."""
    template = tokenizer.chat_template
    if isinstance(template, dict):
        return "tool_use" in template or any("tools" in text for text in template.values())
    return isinstance(template, str) and "tools" in template


def completion_prompts(tokenizer: Any, body: JSON) -> list[list[int]]:
    """One token list per prompt: `prompt` is a string, strings, token ids, or lists of ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [encode(tokenizer, prompt)]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(item, str) for item in prompt):
            return [encode(tokenizer, item) for item in prompt]
        if all(isinstance(item, int) for item in prompt):
            return [_checked_ids(tokenizer, prompt)]
        if all(isinstance(item, list) and item for item in prompt):
            return [_checked_ids(tokenizer, item) for item in prompt]
    raise invalid("prompt must be a string, a list of strings or a list of token ids", "prompt")


def _checked_ids(tokenizer: Any, ids: list[Any]) -> list[int]:
    vocab = len(tokenizer)
    if not all(isinstance(token, int) and 0 <= token < vocab for token in ids):
        raise invalid(f"token ids must be integers in [0, {vocab})", "prompt")
    return list(ids)
