"""A LiteLLM custom guardrail that hands every answer to Conscience (POST /v1/conscience/check).

Runs inside a LiteLLM proxy (`litellm --config config.yaml`; see config.example.yaml and
docs/integrations/litellm.md). Event hook `post_call`: once the upstream has answered, each
choice's text goes to Conscience with the request's messages; a flagged answer is then, as
`conscience_action` says,
- `repair` (default): replaced by what Conscience returns — its repair (which Conscience
  records as a training triple), or its refusal when no repair passed;
- `block`: refused with HTTP 400, the verdict in the error's detail.
A harmless answer passes untouched. `during_call` does not apply: LiteLLM runs it on the request
alone, in parallel with the model, and the conscience judges answers.

This file imports only LiteLLM, FastAPI and httpx (all in LiteLLM's proxy), not Conscience.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import httpx
from fastapi import HTTPException
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.proxy._types import UserAPIKeyAuth
from litellm.types.utils import Choices, ModelResponse

OnFlagged = Literal["repair", "block"]


class ConscienceGuardrail(CustomGuardrail):
    def __init__(
        self,
        api_base: str | None = None,
        api_key: str | None = None,
        conscience_action: OnFlagged = "repair",
        framework: str | None = None,
        timeout_s: float = 60.0,
        **kwargs: Any,
    ) -> None:
        """`api_base`: Conscience's origin (default $CONSCIENCE_API_BASE); `api_key`: a Conscience
        client key (default $CONSCIENCE_API_KEY); `framework`: one the key may use (None: its own)."""
        base = api_base or os.environ.get("CONSCIENCE_API_BASE")
        if not base:
            raise ValueError("ConscienceGuardrail: set api_base (or CONSCIENCE_API_BASE) to Conscience's URL")
        if conscience_action not in ("repair", "block"):
            raise ValueError(
                f"ConscienceGuardrail: conscience_action must be 'repair' or 'block', not {conscience_action!r}"
            )
        self.check_url = base.rstrip("/").removesuffix("/v1") + "/v1/conscience/check"
        self.api_key = api_key or os.environ.get("CONSCIENCE_API_KEY")
        self.action: OnFlagged = conscience_action
        self.framework = framework
        self.timeout_s = timeout_s
        # One client for every check: building one per call costs tens of milliseconds (its TLS
        # context), more than the check itself (bench/integrations.py).
        self._client: httpx.AsyncClient | None = None
        super().__init__(**kwargs)

    async def async_post_call_success_hook(
        self, data: dict, user_api_key_dict: UserAPIKeyAuth, response: Any
    ) -> Any:
        if not isinstance(response, ModelResponse):
            return response  # embeddings, images…: nothing the conscience judges
        choices = [c for c in response.choices if isinstance(c, Choices)]
        if not choices:
            return response
        verdict = await self._check(data, [_choice_wire(c) for c in choices], model=data.get("model"))
        flagged = [r for r in verdict["results"] if r["flagged"]]
        if not flagged:
            return response
        if self.action == "block":
            raise HTTPException(
                status_code=400,
                detail={"error": "Blocked by the conscience", "conscience": {
                    "request_id": verdict["id"], "framework": verdict["framework"], "verdict": verdict["verdict"],
                    "score": verdict["score"],
                }},
            )
        for result in flagged:
            choice = choices[result["index"]]
            choice.message.content = result["answer"]
            choice.message.tool_calls = None
            choice.finish_reason = "stop" if result["repaired"] else "content_filter"
        return response

    async def _check(self, data: dict, choices: list[dict[str, Any]], *, model: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": data.get("messages") or [],
            "choices": choices,
            "repair": self.action == "repair",
        }
        if isinstance(model, str):
            body["model"] = model
        if self.framework:
            body["conscience"] = {"framework": self.framework}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        answer = await self._client.post(self.check_url, json=body, headers=headers)
        if answer.status_code != 200:
            # Not judged is not passed: the gateway's client gets an error, never the unjudged answer.
            raise HTTPException(status_code=502, detail={
                "error": "Conscience check failed", "status": answer.status_code, "conscience": _error_of(answer),
            })
        return answer.json()


def _choice_wire(choice: Choices) -> dict[str, Any]:
    message = choice.message.model_dump(exclude_none=True)
    return {"message": {key: message[key] for key in (
        "role", "content", "reasoning_content", "refusal", "tool_calls", "function_call"
    ) if key in message}}


def _error_of(answer: httpx.Response) -> Any:
    try:
        return answer.json().get("error")
    except ValueError:
        return answer.text[:500]
