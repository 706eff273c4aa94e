"""The outline of a completion that the proxy reads, checked on what an upstream sends.

An upstream answering 200 with `{"choices": "x"}` or a list must be a 502, not a crash in the
code that reads it. Only the outline is checked: `choices` is a list of objects, each with an
integer `index` and its part (`message` or `delta` an object, `text` a string) where present.
What lies inside a message is the surfaces' business; every other field passes untouched.
"""

from __future__ import annotations

from typing import Any, Literal

from service.core.backend import JSON, UpstreamUnavailable

Part = Literal["message", "delta", "text"]

_PART_TYPES: dict[Part, type] = {"message": dict, "delta": dict, "text": str}


class UnexpectedShape(UpstreamUnavailable):
    """502: the upstream's answer is not the outline of a completion."""


def completion(payload: Any, part: Part, *, chunk: bool = False) -> JSON:
    """`payload` when it has the outline of a completion (a stream `chunk` may leave out
    `choices`, as the usage chunk does); UnexpectedShape otherwise."""
    if not isinstance(payload, dict):
        raise UnexpectedShape(_message("it is not a JSON object"))
    choices = payload.get("choices")
    if choices is None and chunk:
        return payload
    if not isinstance(choices, list):
        raise UnexpectedShape(_message("`choices` is not a list"))
    for choice in choices:
        if not isinstance(choice, dict):
            raise UnexpectedShape(_message("a choice is not an object"))
        index = choice.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool):
            raise UnexpectedShape(_message("a choice's `index` is not an integer"))
        value = choice.get(part)
        if value is not None and not isinstance(value, _PART_TYPES[part]):
            raise UnexpectedShape(_message(f"a choice's `{part}` is not a {_PART_TYPES[part].__name__}"))
    return payload


def _message(reason: str) -> str:
    return f"The model server sent an answer the proxy cannot read: {reason}."
