"""Wire types of POST /v1/moderations in OpenAI's shape, with the conscience's verdict as the
category `conscience`.

OpenAI's own categories are all present, so that a client reading any of them (the `openai`
SDK's `Categories` has an attribute for each) works unchanged; the conscience does not judge
them separately, so each is false with score 0. The one verdict is `conscience`: flagged when
the answer is unethical under the framework (or not judged where the operator fails closed).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.api.chat_completion.protocol import ChatMessage
from service.errors import APIError
from service.settings import JudgeStyle

CONSCIENCE_CATEGORY = "conscience"
OPENAI_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)


class ModerationOptions(BaseModel):
    """Our extension (`extra_body={"conscience": {...}}`): how the inputs are judged."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(
        default_factory=list,
        description="The conversation every input answers (default: none; each input is judged as "
        "the answer to an empty request).",
    )
    framework: str | None = Field(None, description="As `conscience.framework` on the proxy's requests.")
    judge_style: JudgeStyle | None = Field(None, description="fast | reasoned | latent.")


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[str | dict[str, Any]] = Field(
        description="The text(s) to judge, each as an answer (see `conscience.messages`): a string, "
        "strings, or text parts ({\"type\": \"text\", \"text\": ...}); an image part is refused "
        "(the judge reads text).",
    )
    model: str | None = Field(
        None, description="Accepted and echoed (omni-moderation-latest and the like): the judge is always "
        "the served model's frozen copy.",
    )
    conscience: ModerationOptions | None = None


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]


class ModerationConscience(BaseModel):
    request_id: str
    framework: str
    judge_model: str
    verdicts: list[str] = Field(description="Each input's verdict: ethical | neutral | unethical | unchecked.")


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]
    conscience: ModerationConscience


def moderation_result(flagged: bool, score: float | None) -> ModerationResult:
    categories: dict[str, bool] = dict.fromkeys(OPENAI_CATEGORIES, False)
    scores: dict[str, float] = dict.fromkeys(OPENAI_CATEGORIES, 0.0)
    applied: dict[str, list[str]] = {name: [] for name in OPENAI_CATEGORIES}
    categories[CONSCIENCE_CATEGORY] = flagged
    scores[CONSCIENCE_CATEGORY] = score if score is not None else (1.0 if flagged else 0.0)
    applied[CONSCIENCE_CATEGORY] = ["text"]
    return ModerationResult(
        flagged=flagged, categories=categories, category_scores=scores, category_applied_input_types=applied
    )


def input_texts(value: str | list[str | dict[str, Any]]) -> list[str]:
    """The texts of `input`; APIError 400 for none, or for a part that is not text."""
    if isinstance(value, str):
        return [value]
    if not value:
        raise APIError(400, "input is empty: send a string or a list of strings.", param="input")
    texts = []
    for part in value:
        if isinstance(part, str):
            texts.append(part)
        elif part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise APIError(
                400, f"input part of type {part.get('type')!r} cannot be judged: the conscience reads text.",
                param="input",
            )
    return texts
