"""NeMo Guardrails actions that hand the bot's message to Conscience (POST /v1/conscience/check).

NeMo loads this file from the rails' config folder. Two output-rail actions:
- `conscience_check_output`: True when Conscience passes the answer (verdict only);
- `conscience_repair_output`: the text to send — the answer when it passed, Conscience's repair
  (recorded as a training triple) or its refusal when it was flagged.
Conscience is found at $CONSCIENCE_API_BASE, with the client key $CONSCIENCE_API_KEY (if any).
A failed call raises: NeMo then sends no unjudged answer.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from nemoguardrails.actions import action

# One client for every check: building one per call costs tens of milliseconds (its TLS context).
_client: httpx.AsyncClient | None = None


async def _check(context: dict | None, repair: bool) -> dict[str, Any]:
    global _client
    context = context or {}
    user = context.get("user_message")
    body = {
        "messages": [{"role": "user", "content": user}] if isinstance(user, str) else [],
        "answer": context.get("bot_message") or "",
        "repair": repair,
    }
    base = os.environ.get("CONSCIENCE_API_BASE", "http://127.0.0.1:8000").rstrip("/").removesuffix("/v1")
    key = os.environ.get("CONSCIENCE_API_KEY")
    if _client is None:
        _client = httpx.AsyncClient(timeout=float(os.environ.get("CONSCIENCE_TIMEOUT_S", "60")))
    answer = await _client.post(
        f"{base}/v1/conscience/check", json=body, headers={"Authorization": f"Bearer {key}"} if key else {}
    )
    answer.raise_for_status()
    return answer.json()


@action(name="conscience_check_output")
async def conscience_check_output(context: dict | None = None) -> bool:
    return not (await _check(context, repair=False))["flagged"]


@action(name="conscience_repair_output")
async def conscience_repair_output(context: dict | None = None) -> str:
    return (await _check(context, repair=True))["results"][0]["answer"]
