"""POST /v1/conscience/portkey: Portkey's webhook guardrail, translated to the check API.

Portkey posts `{request: {json, text}, response: {json, text, statusCode}, eventType, ...}` and
reads `{verdict, data, transformedData}` back
(https://portkey.ai/docs/product/guardrails/bring-your-own-guardrails). At `afterRequestHook`
every chat choice of `response.json` is checked against `request.json.messages`; `verdict` is
false when one is flagged and not repaired. With `?repair=true` a flagged choice is repaired
and the whole response, the repair in place, comes back as `transformedData.response.json`
(verdict true: the transformed answer passed). At `beforeRequestHook` there is no answer yet:
the verdict is true (the conscience judges answers, not requests).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api.check.protocol import AnswerChoice, CheckRequest


class PortkeyBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    json_: dict[str, Any] | None = Field(None, alias="json")


class PortkeyWebhook(BaseModel):
    model_config = ConfigDict(extra="allow")

    request: PortkeyBody = Field(default_factory=PortkeyBody)
    response: PortkeyBody = Field(default_factory=PortkeyBody)
    eventType: Literal["beforeRequestHook", "afterRequestHook"]  # Portkey's name


class PortkeyVerdict(BaseModel):
    verdict: bool
    data: dict[str, Any]
    transformedData: dict[str, Any] | None = None  # Portkey's name


def check_request(webhook: PortkeyWebhook, repair: bool) -> CheckRequest | None:
    """The check a webhook call asks for (None: nothing to judge at this hook)."""
    answer = webhook.response.json_ or {}
    choices = [c for c in answer.get("choices") or [] if isinstance(c, dict) and isinstance(c.get("message"), dict)]
    if webhook.eventType != "afterRequestHook" or not choices:
        return None
    request = webhook.request.json_ or {}
    return CheckRequest.model_validate({
        "messages": request.get("messages") or [],
        "choices": [AnswerChoice.model_validate({"message": c["message"]}).model_dump() for c in choices],
        "repair": repair,
        "model": answer.get("model") if isinstance(answer.get("model"), str) else None,
    })


def portkey_verdict(webhook: PortkeyWebhook, checked: dict[str, Any] | None) -> PortkeyVerdict:
    """`checked`: the check API's response (as JSON) for `check_request(webhook)`."""
    if checked is None:
        return PortkeyVerdict(verdict=True, data={"explanation": "nothing to judge before the answer"})
    results = checked["results"]
    data = {key: checked[key] for key in ("id", "verdict", "score", "framework", "judge_model")}
    if not any(r["repaired"] for r in results):
        return PortkeyVerdict(verdict=not checked["flagged"], data=data)
    response = copy.deepcopy(webhook.response.json_ or {})
    chat_choices = [c for c in response["choices"] if isinstance(c, dict) and isinstance(c.get("message"), dict)]
    for choice, result in zip(chat_choices, results, strict=True):
        if result["flagged"]:
            choice["message"] = {"role": "assistant", "content": result["answer"]}
            choice["finish_reason"] = "stop" if result["repaired"] else "content_filter"
    refused = any(r["flagged"] and not r["repaired"] for r in results)
    return PortkeyVerdict(verdict=not refused, data=data, transformedData={"response": {"json": response}})
