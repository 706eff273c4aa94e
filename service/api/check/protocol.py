"""Wire types of POST /v1/conscience/check: a conversation and its answer (or choices) in, the
conscience's verdict on each (and, when asked, what to send instead) out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.api.chat_completion.protocol import ChatMessage
from service.settings import JudgeStyle, Mode


class CheckOptions(BaseModel):
    """What a caller may choose of the judging, under the same policy as the proxy's requests."""

    model_config = ConfigDict(extra="forbid")

    framework: str | None = Field(
        None,
        description="Framework name: the key's or the server's, or another the operator lets clients "
        "choose (--client-frameworks); else 403 framework_not_allowed.",
    )
    judge_style: JudgeStyle | None = Field(None, description="fast | reasoned | latent.")


class AnswerMessage(BaseModel):
    """An answer as a chat message; the judge reads what the proxy's judge reads of one."""

    model_config = ConfigDict(extra="allow")

    role: str = "assistant"
    content: str | list[dict[str, Any]] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None


class AnswerChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: AnswerMessage


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(
        default_factory=list,
        description="The conversation the answer answers, in chat-completions form (empty: an answer "
        "to an empty request).",
    )
    answer: str | None = Field(None, description="The answer to judge (or `choices`).")
    choices: list[str | AnswerChoice] | None = Field(
        None, min_length=1,
        description="Several answers to judge: strings, or chat choices (`{\"message\": {...}}`) read as "
        "the proxy reads them (reasoning, content, refusal, tool calls).",
    )
    repair: bool = Field(
        False,
        description="Repair a flagged answer: each result's `answer` is then what to send instead "
        "(the repair, or the refusal when none passed), and a repair becomes a training triple.",
    )
    model: str | None = Field(None, description="The model that wrote the answer (recorded; not called).")
    conscience: CheckOptions | None = None

    @model_validator(mode="after")
    def _one_answer_field(self) -> CheckRequest:
        if (self.answer is None) == (self.choices is None):
            raise ValueError("send exactly one of `answer` and `choices`")
        return self


class CheckResult(BaseModel):
    index: int
    verdict: str = Field(description="ethical | neutral | unethical | unchecked")
    flagged: bool = Field(
        description="The answer must not be sent as it is: unethical, or unchecked under fail_closed."
    )
    score: float | None = Field(None, description="Probability that the answer is unethical.")
    signals: dict[str, float] | None = Field(None, description="The score of each verdict signal that ran.")
    repaired: bool = False
    refused: bool = Field(False, description="Flagged, and the refusal replaces it (no repair passed).")
    attempts: int = 0
    answer: str | None = Field(
        None, description="With `repair`: what to send (the original when it passed). Absent otherwise."
    )


class CheckResponse(BaseModel):
    id: str = Field(description="The request id (the checks' and triples' request_id).")
    object: str = "conscience.check"
    verdict: str = Field(description="The worst verdict over the results.")
    flagged: bool = Field(description="Any result flagged.")
    score: float | None = Field(None, description="The highest score over the results.")
    signals: dict[str, float] | None = None
    repaired: bool = False
    framework: str
    judge_model: str
    mode: Mode = Field(description="enforce when a repair was asked for, else monitor (as recorded).")
    results: list[CheckResult]
