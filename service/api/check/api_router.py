"""POST /v1/conscience/check: the conscience for a gateway that already has the answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.api import state
from service.api.chat_completion.serving import ChatSurface
from service.api.check.portkey import PortkeyVerdict, PortkeyWebhook, check_request, portkey_verdict
from service.api.check.protocol import CheckRequest, CheckResponse, CheckResult
from service.api.check.serving import CheckCall, CheckedAnswers
from service.api.deps import OPENAI_ERRORS, request_id_of
from service.conscience.pipeline import Case
from service.conscience.policy import worst_verdict
from service.core.backend import JSON
from service.security.auth import require_client
from service.security.cache import ClientIdentity

router = APIRouter(tags=["conscience"])

_CHAT = ChatSurface()  # a chat choice is read exactly as the proxy reads it


def _answers(body: CheckRequest) -> list[str]:
    if body.answer is not None:
        return [body.answer]
    return [
        c if isinstance(c, str) else _CHAT.choice_text(c.model_dump(exclude_none=True)) for c in body.choices or []
    ]


def _conversation(body: CheckRequest) -> list[JSON]:
    return [message.model_dump(exclude_unset=True) for message in body.messages]


def _response(body: CheckRequest, checked: CheckedAnswers) -> CheckResponse:
    results = [
        CheckResult(
            index=i, verdict=r.verdict, flagged=checked.flagged(r), score=r.score, signals=r.signals,
            repaired=r.repaired, refused=body.repair and r.refused, attempts=r.attempts,
            answer=r.final_text if body.repair else None,
        )
        for i, r in enumerate(checked.reviews)
    ]
    scores = [r.score for r in results if r.score is not None]
    signals: dict[str, float] = {}
    for result in results:
        for name, score in (result.signals or {}).items():
            signals[name] = max(score, signals.get(name, score))
    return CheckResponse(
        id=checked.context.request_id,
        verdict=worst_verdict(r.verdict for r in results),
        flagged=any(r.flagged for r in results),
        score=max(scores) if scores else None,
        signals=signals or None,
        repaired=any(r.repaired for r in results),
        framework=checked.framework.name,
        judge_model=checked.context.policy.judge_model,
        mode=checked.context.mode,
        results=results,
    )


@router.post(
    "/v1/conscience/check", response_model=CheckResponse, responses=OPENAI_ERRORS,
    summary="Judge (and, when asked, repair) answers a gateway already has",
)
async def check_answers(
    body: CheckRequest, raw: Request, caller: ClientIdentity | None = Depends(require_client)
) -> CheckResponse:
    return await _checked(body, raw, caller)


@router.post(
    "/v1/conscience/portkey", response_model=PortkeyVerdict, response_model_exclude_none=True,
    responses=OPENAI_ERRORS, summary="The check API as Portkey's webhook guardrail",
)
async def portkey_webhook(
    body: PortkeyWebhook, raw: Request, repair: bool = False,
    caller: ClientIdentity | None = Depends(require_client),
) -> PortkeyVerdict:
    """`repair`: repair a flagged answer and hand it back as `transformedData` (?repair=true)."""
    request = check_request(body, repair)
    checked = None if request is None else (await _checked(request, raw, caller)).model_dump(mode="json")
    return portkey_verdict(body, checked)


async def _checked(body: CheckRequest, raw: Request, caller: ClientIdentity | None) -> CheckResponse:
    call = CheckCall(
        endpoint="check",
        cases=[Case(_conversation(body), answer) for answer in _answers(body)],
        repair=body.repair,
        framework=body.conscience.framework if body.conscience else None,
        judge_style=body.conscience.judge_style if body.conscience else None,
        policy_model=body.model,
    )
    checked = await state.conscience_checks(raw).check(call, caller, request_id_of(raw))
    return _response(body, checked)
