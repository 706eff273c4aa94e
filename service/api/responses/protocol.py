"""OpenAI Responses API wire types (`POST /v1/responses`), the subset a chat completion can serve.

Shapes follow the `openai` SDK's `openai.types.responses` (tests/api/test_responses.py
has the SDK validate them). Input: a string or a list of items (messages with `input_text` /
`input_image` / `output_text` parts, `function_call` and `function_call_output` items of an
agent loop; `reasoning` items are accepted and dropped, as chat completions take none back).
Tools: functions only; the proxy runs no hosted tools. The proxy keeps no responses, so fields
that refer to stored state (`previous_response_id`, `conversation`, `prompt`, `background`) are
refused rather than ignored: ignoring them would answer a different question. Other fields the
Responses API defines are accepted and not forwarded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from service.api.conscience_protocol import ConscienceOptions, ConscienceResult

# --- request ---------------------------------------------------------------------------------


class InputText(BaseModel):
    type: Literal["input_text"]
    text: str


class InputImage(BaseModel):
    type: Literal["input_image"]
    image_url: str = Field(description="A URL or a data: URL; uploaded files are not supported.")
    detail: Literal["low", "high", "auto"] = "auto"


class OutputTextPart(BaseModel):
    """An earlier assistant turn's text, as a client sends a conversation back."""

    model_config = ConfigDict(extra="ignore")  # annotations, logprobs: nothing to forward

    type: Literal["output_text"]
    text: str


class RefusalPart(BaseModel):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputText | InputImage | OutputTextPart | RefusalPart, Field(discriminator="type")]


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="ignore")  # id, status, phase

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    call_id: str
    output: str


class ReasoningInputItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["reasoning"]


def _item_type(item: Any) -> str:
    """Easy input messages may leave out `type`."""
    kind = item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", "message")
    return str(kind)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningInputItem, Tag("reasoning")],
    Discriminator(_item_type),
]


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="ignore")  # defer_loading, allowed_callers...: OpenAI-only

    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(BaseModel):
    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    model_config = ConfigDict(populate_by_name=True)


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # verbosity

    format: TextFormat = Field(default_factory=TextFormat)


_STATEFUL = ("previous_response_id", "conversation", "prompt")


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="Defaults to the proxy's configured policy model.")
    input: str | list[InputItem] = Field(description="A user message, or the conversation's items.")
    instructions: str | None = Field(None, description="Sent first, as the system message.")
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    stream: bool = False
    metadata: dict[str, str] | None = Field(None, description="Echoed on the response; not forwarded.")
    store: bool | None = Field(None, description="Ignored: the proxy keeps no responses.")
    background: bool | None = None
    user: str | None = None
    conscience: ConscienceOptions | None = None

    @model_validator(mode="after")
    def _no_stored_state(self) -> ResponsesRequest:
        for name in _STATEFUL:
            if (self.model_extra or {}).get(name) is not None:
                raise ValueError(f"{name}: this server keeps no responses; send the whole input instead")
        if self.background:
            raise ValueError("background: this server keeps no responses; call it without background")
        return self


# --- response --------------------------------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class FunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ReasoningItem(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ReasoningText]
    status: ItemStatus


OutputItem = Annotated[OutputMessage | FunctionCall | ReasoningItem, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(BaseModel):
    code: Literal["server_error", "rate_limit_exceeded"] = "server_error"
    message: str


class ResponseConscience(ConscienceResult):
    """The chat surface's `conscience` object, passed on whole (fields it gains included)."""

    model_config = ConfigDict(extra="allow")


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseObject(BaseModel):
    id: str = Field(description='"resp_" and a random hex id.')
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction = "auto"
    parallel_tool_calls: bool = True
    text: TextConfig = Field(default_factory=TextConfig)
    metadata: dict[str, str] = Field(default_factory=dict)
    store: Literal[False] = False  # nothing is kept
    conscience: ResponseConscience | None = Field(
        None, description="The verdict, as on chat completions; on the final stream event."
    )


# --- stream events -----------------------------------------------------------------------------


class LifecycleEvent(BaseModel):
    type: Literal[
        "response.created", "response.in_progress", "response.completed",
        "response.incomplete", "response.failed",
    ]
    sequence_number: int
    response: ResponseObject


class OutputItemEvent(BaseModel):
    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int
    item: OutputItem


class ContentPartEvent(BaseModel):
    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: Annotated[OutputText | ReasoningText, Field(discriminator="type")]


class _TextEvent(BaseModel):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int


class OutputTextDeltaEvent(_TextEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class OutputTextDoneEvent(_TextEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ReasoningTextDeltaEvent(_TextEvent):
    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    delta: str


class ReasoningTextDoneEvent(_TextEvent):
    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    text: str


class ArgumentsDeltaEvent(BaseModel):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(BaseModel):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    sequence_number: int
    code: str | None = None
    message: str
    param: str | None = None


StreamEvent = (
    LifecycleEvent | OutputItemEvent | ContentPartEvent | OutputTextDeltaEvent | OutputTextDoneEvent
    | ReasoningTextDeltaEvent | ReasoningTextDoneEvent | ArgumentsDeltaEvent | ArgumentsDoneEvent
    | ErrorEvent
)
