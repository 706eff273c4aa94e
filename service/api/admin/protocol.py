"""Wire types of the admin API (they appear in the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.store.models import BlockedReview, TripleStatus
from service.store.stats import Bucket


class TripleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    request_id: str
    client_request_id: str | None = Field(
        None, description="The id the client sent in X-Client-Request-Id (null: none sent)."
    )
    check_id: str
    created_at: datetime
    framework: str
    prompt: list[dict[str, Any]] = Field(description="The conversation as OpenAI messages.")
    rejected: str = Field(description="The flagged answer.")
    chosen: str = Field(description="The accepted repair.")
    details: dict[str, Any] = Field(
        description="Verdicts and scores of the original and the repair."
    )
    policy_model: str
    judge_model: str
    status: TripleStatus
    reviewed_at: datetime | None
    trained_in_version: str | None = Field(description="Adapter version trained on this triple.")


class TripleList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TripleOut]
    total: int = Field(description="Triples matching the filters, over all pages.")
    limit: int
    offset: int


class ReviewRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=1000, description="Triple ids to review.")
    status: Literal["approved", "rejected"]


class ReviewResult(BaseModel):
    object: Literal["list"] = "list"
    data: list[TripleOut] = Field(description="The reviewed triples, in the order asked for.")


class BlockedOut(BaseModel):
    """A blocked answer: flagged, and no repair passed the judge (its check, with its text)."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="The check's id.")
    request_id: str
    client_request_id: str | None = Field(
        None, description="The id the client sent in X-Client-Request-Id (null: none sent)."
    )
    created_at: datetime
    framework: str
    mode: str
    score: float | None = Field(description="The flagged answer's score.")
    threshold: float | None = Field(description="The score it was flagged at (null before migration 0004).")
    attempts: int = Field(description="Repair attempts, none of which passed.")
    policy_model: str
    judge_model: str
    prompt: list[dict[str, Any]] | None = Field(
        description="The conversation as OpenAI messages (null before migration 0002)."
    )
    answer: str | None = Field(description="The blocked answer (null before migration 0002).")
    drafts: list[dict[str, Any]] | None = Field(description="The discarded repair drafts, with why.")
    blocked_review: BlockedReview | None = Field(
        description="right: rightly blocked (the answer was harmful); wrong: wrongly blocked (the "
        "judge's false positive); null: not yet reviewed."
    )
    reviewed_at: datetime | None


class BlockedList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BlockedOut]
    total: int = Field(description="Blocked answers matching the filters, over all pages.")
    limit: int
    offset: int


class BlockedReviewRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=1000, description="Ids of blocked answers (their checks).")
    review: BlockedReview = Field(description="right: rightly blocked; wrong: wrongly blocked.")


class BlockedReviewResult(BaseModel):
    object: Literal["list"] = "list"
    data: list[BlockedOut] = Field(description="The marked answers, in the order asked for.")


class ChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class PreferenceExample(BaseModel):
    """One line of the export: TRL's conversational preference format."""

    prompt: list[dict[str, Any]]
    chosen: list[ChatMessage]
    rejected: list[ChatMessage]


class VerdictBucket(BaseModel):
    bucket_start: datetime = Field(description="Start of the UTC hour or day.")
    framework: str
    verdict: str
    count: int


class VerdictStats(BaseModel):
    object: Literal["list"] = "list"
    bucket: Bucket
    data: list[VerdictBucket] = Field(description="Oldest bucket first; empty buckets left out.")
