"""The Responses API translation, read by the real `openai` SDK.

A tiny Starlette app on loopback answers `POST /v1/responses` with the translation of canned
chat completions (and their chunks), or, as the route will once it is wired in, of what the
proxy's checked chat serving answers. The SDK's `responses.create` / `responses.stream` parse
it; every object and event is also validated strictly against the SDK's own types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route

from service.api.chat_completion.protocol import ChatCompletionRequest
from service.api.conscience_protocol import ConscienceResult
from service.api.responses.chat_request import chat_request
from service.api.responses.chat_response import response_from_chat
from service.api.responses.event_stream import ResponsesStream, response_events, sse_event
from service.api.responses.protocol import ResponsesRequest
from service.store.models import Check
from tests.api.conftest import HARMFUL, REPAIRED, ProxyFactory
from tests.fakes import openai_wire as wire
from tests.fakes.openai_wire import Choice, ToolCall, tokenize
from tests.fakes.server import ThreadedServer

JSON = dict[str, Any]
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
# As the chat serving sends it: every field of the declared model (those it gains included).
CONSCIENCE = ConscienceResult.model_validate({
    "verdict": "ethical", "score": 0.05, "framework": "three_laws", "mode": "enforce",
    "repaired": False, "refused": False, "attempts": 0, "judge_model": "base-model",
    "request_id": "req-1",
    "choices": [{"index": 0, "verdict": "ethical", "score": 0.05, "repaired": False, "refused": False, "attempts": 0}],
}).model_dump(mode="json")
WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ANSWER = "Knead, let it rise, bake at 220 degrees."
REASONING = "The user wants bread; give the steps."


def choice(scenario: str) -> Choice:
    if scenario == "tool":
        return Choice([], "tool_calls", [], ToolCall("get_weather", {"city": "Prague"}, id="call_7"))
    tokens = tokenize({"refusal": "I can't help with that."}.get(scenario, ANSWER))
    finish = {"refusal": "content_filter", "length": "length"}.get(scenario, "stop")
    return Choice(tokens, finish, [[(t, 1.0)] for t in tokens],
                  reasoning=REASONING if scenario == "reasoning" else None)


def completion(scenario: str) -> JSON:
    body = wire.chat_completion("policy-v3", [choice(scenario)], prompt_tokens=12, top_n=None)
    return {**body, "conscience": CONSCIENCE}


def chunks(scenario: str) -> list[JSON]:
    out = list(wire.chat_chunks("policy-v3", [choice(scenario)], 12, None, include_usage=True))
    out[-1] = {**out[-1], "conscience": CONSCIENCE}  # the chat stream's last chunk carries it
    if scenario == "error":
        out = [*out[:3], {"error": {"message": "upstream went away", "type": "upstream_unavailable",
                                    "param": None, "code": None}}]
    return out


async def replay(items: list[JSON]) -> AsyncIterator[JSON]:
    for item in items:
        yield item


class ResponsesApp:
    """`POST /v1/responses`: the translation of a canned chat answer chosen by
    `metadata.scenario`; keeps the requests and what it sent."""

    def __init__(self) -> None:
        self.requests: list[JSON] = []
        self.sent: list[JSON] = []
        self.app = Starlette(routes=[Route("/v1/responses", self.create, methods=["POST"])])

    async def create(self, raw: Request) -> HTTPResponse:
        body = await raw.json()
        self.requests.append(body)
        try:
            request = ResponsesRequest.model_validate(body)
        except ValidationError as exc:
            error = {"message": str(exc.errors()[0]["msg"]), "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=400)
        scenario = (request.metadata or {}).get("scenario", "text")
        if not request.stream:
            response = response_from_chat(completion(scenario), request)
            self.sent.append(response)
            return JSONResponse(response)
        return StreamingResponse(self._events(chunks(scenario), request), media_type="text/event-stream")

    async def _events(self, items: list[JSON], request: ResponsesRequest) -> AsyncIterator[bytes]:
        async for event in response_events(replay(items), request):
            self.sent.append(event)
            yield sse_event(event)


@pytest.fixture
def canned() -> Iterator[tuple[ResponsesApp, openai.OpenAI]]:
    app = ResponsesApp()
    with ThreadedServer(app.app, lifespan="off") as server:
        yield app, openai.OpenAI(base_url=f"{server.origin}/v1", api_key="unused", max_retries=0)


def strictly_valid_events(events: list[JSON]) -> list[str]:
    """Validate each event against the SDK's types; their types, in order."""
    for event in events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return [e["type"] for e in events]


# --- the request -------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    request = ResponsesRequest.model_validate({
        "model": "policy", "input": "How do I bake bread?", "instructions": "Be brief.",
        "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9, "store": True,
        "metadata": {"team": "a"}, "conscience": {"framework": "wwjd"},
    })
    body = chat_request(request)
    assert body == {
        "model": "policy", "stream": False, "max_tokens": 64, "temperature": 0.2, "top_p": 0.9,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "How do I bake bread?"}],
        "conscience": {"framework": "wwjd"},
    }
    ChatCompletionRequest.model_validate(body)


def test_an_agent_loop_input_becomes_the_chat_conversation() -> None:
    request = ResponsesRequest.model_validate({
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "Use tools."}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather in "}, {"type": "input_text", "text": "Prague?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_7", "name": "get_weather",
             "arguments": '{"city":"Prague"}', "id": "fc_1", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_7", "output": "Sunny, 21 C"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "And this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        ],
        "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False, "stream": True,
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
    })
    body = chat_request(request)
    assert body["messages"] == [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Weather in Prague?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_7", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Prague"}'}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "Sunny, 21 C"},
        {"role": "user", "content": [
            {"type": "text", "text": "And this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "auto"}}]},
    ]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER_TOOL["parameters"]}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True}}
    ChatCompletionRequest.model_validate(body)


@pytest.mark.parametrize(
    "field", [{"previous_response_id": "resp_1"}, {"conversation": "conv_1"}, {"background": True},
              {"tools": [{"type": "web_search"}]}],
)
def test_what_this_server_cannot_honour_is_refused(field: JSON) -> None:
    with pytest.raises(ValidationError):
        ResponsesRequest.model_validate({"input": "hi", **field})


def test_the_sdk_request_is_understood(canned: tuple[ResponsesApp, openai.OpenAI]) -> None:
    app, client = canned
    client.responses.create(
        model="policy", instructions="Be brief.", max_output_tokens=32, store=False,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Bread?"}]}],
        tools=[WEATHER_TOOL], tool_choice="auto", extra_body={"conscience": {"mode": "enforce"}},
    )
    body = chat_request(ResponsesRequest.model_validate(app.requests[-1]))
    assert body["messages"][-1] == {"role": "user", "content": "Bread?"}
    assert body["max_tokens"] == 32 and body["conscience"] == {"mode": "enforce"}


def test_a_stored_state_request_gets_a_400_the_sdk_raises(canned: tuple[ResponsesApp, openai.OpenAI]) -> None:
    _, client = canned
    with pytest.raises(openai.BadRequestError, match="keeps no responses"):
        client.responses.create(model="policy", input="hi", previous_response_id="resp_1")


# --- the response ------------------------------------------------------------------------------


def test_a_text_answer_with_reasoning(canned: tuple[ResponsesApp, openai.OpenAI]) -> None:
    app, client = canned
    response = client.responses.create(model="policy", input="Bread?", metadata={"scenario": "reasoning"})
    assert response.output_text == ANSWER
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "policy-v3"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text == REASONING
    assert response.usage is not None and response.usage.input_tokens == 12
    assert response.usage.output_tokens == len(tokenize(ANSWER))
    assert response.usage.total_tokens == 12 + len(tokenize(ANSWER))
    assert response.model_extra["conscience"] == CONSCIENCE
    assert response.metadata == {"scenario": "reasoning"} and response.store is False
    Response.model_validate(app.sent[-1])


def test_a_tool_call_is_a_function_call_item(canned: tuple[ResponsesApp, openai.OpenAI]) -> None:
    app, client = canned
    response = client.responses.create(model="policy", input="Weather?", tools=[WEATHER_TOOL],
                                       metadata={"scenario": "tool"})
    [call] = response.output
    assert call.type == "function_call" and call.call_id == "call_7" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "Prague"}
    assert response.output_text == "" and response.tools[0].name == "get_weather"
    Response.model_validate(app.sent[-1])


@pytest.mark.parametrize(("scenario", "reason"), [("refusal", "content_filter"), ("length", "max_output_tokens")])
def test_a_refused_or_cut_answer_is_incomplete(
    canned: tuple[ResponsesApp, openai.OpenAI], scenario: str, reason: str
) -> None:
    _, client = canned
    response = client.responses.create(model="policy", input="x", metadata={"scenario": scenario})
    assert response.status == "incomplete" and response.incomplete_details.reason == reason
    assert response.output[0].status == "incomplete"


# --- the stream --------------------------------------------------------------------------------

TEXT_EVENTS = [
    "response.output_item.added", "response.content_part.added",
    *["response.output_text.delta"] * len(tokenize(ANSWER)),
    "response.output_text.done", "response.content_part.done", "response.output_item.done",
]


def test_a_stream_through_the_sdk_helper(canned: tuple[ResponsesApp, openai.OpenAI]) -> None:
    app, client = canned
    with client.responses.stream(model="policy", input="Bread?") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == ANSWER and final.output_text == ANSWER
    assert final.model_extra["conscience"] == CONSCIENCE
    assert final.usage is not None and final.usage.input_tokens == 12
    types = strictly_valid_events(app.sent)
    assert types == ["response.created", "response.in_progress", *TEXT_EVENTS, "response.completed"]
    assert app.sent[0]["response"]["status"] == "in_progress"
    assert all(e["response"]["id"] == app.sent[0]["response"]["id"] for e in app.sent if "response" in e)


def test_a_streamed_reasoning_then_answer(canned: tuple[ResponsesApp, openai.OpenAI]) -> None:
    app, client = canned
    with client.responses.stream(model="policy", input="Bread?", metadata={"scenario": "reasoning"}) as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == REASONING and final.output_text == ANSWER
    types = strictly_valid_events(app.sent)
    assert types[2:8] == [
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
    ]


def test_a_streamed_tool_call(canned: tuple[ResponsesApp, openai.OpenAI]) -> None:
    app, client = canned
    with client.responses.stream(model="policy", input="Weather?", tools=[WEATHER_TOOL],
                                 metadata={"scenario": "tool"}) as stream:
        argument_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    [call] = final.output
    assert call.type == "function_call" and call.call_id == "call_7" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "Prague"} == orjson.loads("".join(argument_deltas))
    assert strictly_valid_events(app.sent)[2:] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]
    assert final.model_extra["conscience"] == CONSCIENCE


def test_a_streamed_refusal_ends_incomplete_with_the_conscience(canned: tuple[ResponsesApp, openai.OpenAI]) -> None:
    app, client = canned
    events = list(client.responses.create(model="policy", input="x", stream=True, metadata={"scenario": "refusal"}))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "content_filter"
    assert last.response.output_text == "I can't help with that."
    assert last.response.model_extra["conscience"] == CONSCIENCE
    strictly_valid_events(app.sent)


def test_a_chat_stream_failure_is_an_error_event_and_a_failed_response(
    canned: tuple[ResponsesApp, openai.OpenAI],
) -> None:
    app, client = canned
    events = list(client.responses.create(model="policy", input="x", stream=True, metadata={"scenario": "error"}))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2].message == "upstream went away"
    assert events[-1].response.status == "failed" and events[-1].response.error.code == "server_error"
    strictly_valid_events(app.sent)


def test_an_empty_answer_is_an_empty_message() -> None:
    request = ResponsesRequest.model_validate({"input": "x", "stream": True})
    stream = ResponsesStream(request)
    events = [*stream.start(), *stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
              *stream.finish()]
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == "" and final.status == "completed"
    assert stream.feed({"choices": []}) == [] and stream.finish() == []  # ended


# --- through the proxy's checked chat serving ------------------------------------------------------


@pytest.fixture
def through_proxy(start_proxy: ProxyFactory) -> Iterator[openai.OpenAI]:
    """The proxy's own POST /v1/responses, over its checked chat serving."""
    yield start_proxy(mode="enforce").client()


def test_a_harmful_answer_comes_back_repaired_with_its_verdict(through_proxy: openai.OpenAI, fake: Any) -> None:
    fake.policy_answer = HARMFUL
    raw = through_proxy.responses.with_raw_response.create(model="policy", input="My neighbour is loud.")
    response = raw.parse()
    assert response.output_text == REPAIRED
    conscience = response.model_extra["conscience"]
    assert conscience["verdict"] == "unethical" and conscience["repaired"] is True
    assert raw.headers["x-conscience-repaired"] == "true"


def test_a_harmful_stream_comes_back_repaired_with_its_verdict(through_proxy: openai.OpenAI, fake: Any) -> None:
    fake.policy_answer = HARMFUL
    with through_proxy.responses.stream(model="policy", input="My neighbour is loud.") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert "crowbar" not in text and final.output_text == REPAIRED
    assert final.model_extra["conscience"]["repaired"] is True
    assert final.usage is not None and final.usage.input_tokens > 0


def test_a_tool_call_through_the_proxy(through_proxy: openai.OpenAI, fake: Any) -> None:
    fake.tool_call = ToolCall("get_weather", {"city": "Prague"}, id="call_9")
    response = through_proxy.responses.create(model="policy", input="Weather in Prague?", tools=[WEATHER_TOOL])
    [call] = response.output
    assert call.type == "function_call" and call.call_id == "call_9"
    assert orjson.loads(call.arguments) == {"city": "Prague"}
    assert response.model_extra["conscience"]["verdict"] == "ethical"


@pytest.mark.parametrize("stream", [False, True])
def test_its_checks_are_recorded_as_the_responses_endpoint(start_proxy: ProxyFactory, fake: Any, stream: bool) -> None:
    proxy = start_proxy(mode="enforce")
    fake.policy_answer = HARMFUL
    created = proxy.client().responses.create(model="policy", input="My neighbour is loud.", stream=stream)
    if stream:
        list(created)  # type: ignore[call-overload]  # read to its end
    [check] = proxy.wait_rows(Check, 1)
    assert (check.endpoint, check.repaired) == ("responses", True)

