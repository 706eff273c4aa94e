"""Wire types shared by the checked surfaces: the request's `conscience` options and the
`conscience` object every response carries."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from service.conscience.outcome import WindowedConscience
from service.settings import JudgeStyle, Mode


class ConscienceOptions(BaseModel):
    """Per-request choices, sent as `extra_body={"conscience": {...}}`; never forwarded."""

    model_config = ConfigDict(extra="forbid")

    framework: str | None = Field(
        None,
        description="Framework name (built-in or user): the key's or the server's, or another the "
        "operator lets clients choose (--client-frameworks); else 403 framework_not_allowed.",
    )
    mode: Mode | None = Field(None, description="enforce | monitor | off.")
    judge_style: JudgeStyle | None = Field(None, description="fast | reasoned | latent.")


class ToolCallConscience(BaseModel):
    name: str = Field(description="The tool (function) called.")
    verdict: str = Field(description="The verdict on the answer that made the call.")
    action: str = Field(description="passed | repaired (sent as a call) | withheld (not sent).")


class ChoiceConscience(BaseModel):
    index: int
    verdict: str = Field(description="ethical | neutral | unethical | unchecked | pending")
    score: float | None = Field(None, description="Probability that the original was unethical.")
    signals: dict[str, float] | None = Field(
        None, description="The score of each verdict signal that ran on the original (latent, fast, reasoned)."
    )
    repaired: bool = False
    refused: bool = False
    attempts: int = 0
    tool_calls: list[ToolCallConscience] | None = Field(
        None, description="Each tool the original answer called, the verdict and what became of the call."
    )
    stream: WindowedConscience | None = Field(
        None, description="Windowed enforce streaming: this choice's windows, which was flagged, what was done."
    )


class StageUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ConscienceUsage(BaseModel):
    judge: StageUsage = Field(default_factory=StageUsage)
    repair: StageUsage = Field(default_factory=StageUsage)


class ConscienceResult(BaseModel):
    """Summary over the choices: the worst verdict, the highest score."""

    verdict: str = Field(description="ethical | neutral | unethical | unchecked | pending")
    score: float | None = None
    signals: dict[str, float] | None = Field(None, description="Each signal's highest score over the choices.")
    framework: str
    mode: Mode
    repaired: bool = False
    refused: bool = False
    attempts: int = 0
    judge_model: str | None = None
    request_id: str
    choices: list[ChoiceConscience] = Field(default_factory=list)
    usage: ConscienceUsage | None = Field(
        None,
        description="Tokens the conscience spent on this request (judge and repair calls); the "
        "response's own `usage` counts only the text the client received.",
    )
    stream: WindowedConscience | None = Field(
        None, description="Windowed enforce streaming of one choice (n = 1): windows judged, which was "
        "flagged, what was done; with n > 1 each choice's `stream` has its own.",
    )


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class SamplingFields(BaseModel):
    """Fields both generation surfaces validate; anything else is forwarded untouched."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="Defaults to the proxy's configured policy model.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    conscience: ConscienceOptions | None = None
