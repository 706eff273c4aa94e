"""What of an upstream choice reaches the client while the conscience is on: an allow-list.

"The judge reads everything a client would get" holds only if the client gets nothing the judge
did not read. An upstream may add fields to a choice or its message that carry answer content
the judge never sees (`audio` with its transcript, `annotations`, vLLM's `token_ids` of an answer
that was then repaired, ...). So a checked surface forwards a choice's metadata (`index`,
`finish_reason`, `logprobs` of the judged tokens, a `stop_reason` that is a token id or one of
the request's own stop strings) and its part (`message`, `delta` or `text`) as the surface's
`keep_part` rewrites it; everything else is dropped. Mode off forwards the upstream's answer
untouched (there is no judge to read it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from service.core.backend import JSON

_CHOICE_METADATA = frozenset({"index", "finish_reason", "logprobs"})


def forwarded_choice(choice: JSON, body: JSON, keep_part: Mapping[str, Callable[[Any], Any]]) -> JSON:
    """`choice` with only its metadata and its parts (`keep_part`: the part's name -> what of
    it is forwarded); `body` is the request sent upstream (its stop strings)."""
    kept = {key: value for key, value in choice.items() if key in _CHOICE_METADATA}
    for part, keep in keep_part.items():
        if part in choice:
            kept[part] = keep(choice[part])
    if "stop_reason" in choice and _is_request_stop(choice["stop_reason"], body):
        kept["stop_reason"] = choice["stop_reason"]
    return kept


def only(fields: Any, names: frozenset[str]) -> Any:
    """An object's `names` fields (a non-object is returned as it is: the shape check or the
    judge deals with it)."""
    if not isinstance(fields, dict):
        return fields
    return {key: value for key, value in fields.items() if key in names}


def _is_request_stop(stop_reason: Any, body: JSON) -> bool:
    """vLLM's `stop_reason`: the stop token id, or the stop string, which the client sent."""
    if stop_reason is None or (isinstance(stop_reason, int) and not isinstance(stop_reason, bool)):
        return True
    stops = body.get("stop")
    return isinstance(stop_reason, str) and stop_reason in ([stops] if isinstance(stops, str) else stops or [])
