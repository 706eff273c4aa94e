"""POST /v1/moderations: OpenAI's moderation API, answered by the conscience's judge."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.api import state
from service.api.check.serving import CheckCall
from service.api.deps import OPENAI_ERRORS, request_id_of
from service.api.moderations.protocol import (
    ModerationConscience,
    ModerationRequest,
    ModerationResponse,
    input_texts,
    moderation_result,
)
from service.conscience.pipeline import Case
from service.security.auth import require_client
from service.security.cache import ClientIdentity

router = APIRouter(tags=["openai"])

DEFAULT_MODEL = "conscience"  # echoed when the request names no model


@router.post(
    "/v1/moderations", response_model=ModerationResponse, responses=OPENAI_ERRORS,
    summary="Moderation (OpenAI's shape), judged by the conscience",
)
async def create_moderation(
    body: ModerationRequest, raw: Request, caller: ClientIdentity | None = Depends(require_client)
) -> ModerationResponse:
    texts = input_texts(body.input)
    options = body.conscience
    conversation = [m.model_dump(exclude_unset=True) for m in options.messages] if options else []
    call = CheckCall(
        endpoint="moderations",
        cases=[Case(conversation, text) for text in texts],
        repair=False,
        framework=options.framework if options else None,
        judge_style=options.judge_style if options else None,
    )
    checked = await state.conscience_checks(raw).check(call, caller, request_id_of(raw))
    return ModerationResponse(
        id=f"modr-{checked.context.request_id}",
        model=body.model or DEFAULT_MODEL,
        results=[moderation_result(checked.flagged(r), r.score) for r in checked.reviews],
        conscience=ModerationConscience(
            request_id=checked.context.request_id,
            framework=checked.framework.name,
            judge_model=checked.context.policy.judge_model,
            verdicts=[r.verdict for r in checked.reviews],
        ),
    )
