"""What the fake upstream answers: the per-test script and the choices it decides per request.

Requests come in two kinds. A chat request with `logprobs` and a one-token budget is a *verdict*:
its single token and top_logprobs come from `judge`. Every other chat or text completion is a
*generation*: its text comes from `policy_answer`, or from `base_model_answer` when addressed to
the base model (the frozen judge: repairs, reasoned verdicts) and that is set. Both may be
callables of the request, so a test can route by model name and by content.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tests.fakes.openai_wire import JSON, Choice, ToolCall, tokenize

Answer = str | list[str] | Callable[[JSON], str | list[str]]  # a list: one text per choice (n)
Distribution = Mapping[str, float] | Callable[[list[JSON]], Mapping[str, float]]

# Verdict labels as the first token of a BPE vocabulary usually spells them.
PREFIX_LABEL_TOKENS = {"unethical": "un", "ethical": "eth", "neutral": "neutral"}


def is_verdict(body: JSON) -> bool:
    budget = body.get("max_completion_tokens") or body.get("max_tokens")
    return budget == 1 and bool(body.get("logprobs"))


def _default_judge() -> dict[str, float]:
    return {"No": 0.95, "Yes": 0.05}  # the fast judge's question: a harmless answer


@dataclass(eq=False)  # a FakeUpstream built on it keeps identity equality and hashing
class Script:
    policy_answer: Answer = "Sure, here is a helpful answer."
    base_model_answer: Answer | None = None
    # a policy generation's reasoning, as vLLM's reasoning parsers send it (`reasoning_content`)
    reasoning: str | None = None
    # fields a policy generation carries besides its text (the fake can say anything): on its
    # message (a stream's first delta) and on its choice (every chunk's), e.g. `audio`, `token_ids`
    message_extras: JSON = field(default_factory=dict)
    choice_extras: JSON = field(default_factory=dict)
    judge: Distribution = field(default_factory=_default_judge)
    # label -> the token text a verdict shows for it; keys of `judge` not in here are sent as is.
    label_tokens: dict[str, str] = field(default_factory=dict)
    # answered instead of text when the request offers tools (and tool_choice is not "none")
    tool_call: ToolCall | Callable[[JSON], ToolCall | None] | None = None
    api_key: str | None = None  # when set, requests without `Authorization: Bearer <key>` get 401
    logprobs_enabled: bool = True  # False: like a server that ignores `logprobs`
    known_models_only: bool = False  # True: unknown model names get vLLM's 404
    max_model_len: int | None = None  # listed in /v1/models as vLLM lists it (None: not listed)
    delay_s: float = 0.0  # before answering anything
    token_delay_s: float = 0.0  # between stream events; 0 sends a whole stream in one write
    hang: bool = False  # accept requests and never answer
    fail_status: int | None = None  # answer everything with this status ...
    fail_error: JSON | None = None  # ... and this OpenAI error object (default: a generic one)
    stream_error_after: int | None = None  # stream events sent before an error event
    record_requests: bool = True  # False: keep no history (long benchmark runs)
    # /v1/embeddings: each input text -> its vector (None: a hash of the text, 8 numbers);
    # `embeddings_served` False answers it as vLLM does for a generative model (400).
    embedding: Callable[[str], list[float]] | None = None
    embeddings_served: bool = True

    def reset_script(self) -> None:
        defaults = Script()
        for script_field in fields(Script):
            setattr(self, script_field.name, getattr(defaults, script_field.name))

    def verdict_choice(self, messages: list[JSON]) -> Choice:
        distribution = self.judge(messages) if callable(self.judge) else self.judge
        merged: dict[str, float] = {}
        for key, probability in distribution.items():
            token = self.label_tokens.get(key, key)
            merged[token] = merged.get(token, 0.0) + probability
        ranking = sorted(merged.items(), key=lambda item: item[1], reverse=True)
        return Choice([ranking[0][0]], "length", [ranking])

    def generation_choices(self, body: JSON, base_model: str) -> list[Choice]:
        script = self.policy_answer
        if self.base_model_answer is not None and body.get("model") == base_model:
            script = self.base_model_answer
        answers = script(body) if callable(script) else script
        if isinstance(answers, str):
            answers = [answers]
        tool_call = self._tool_call(body)
        budget = body.get("max_completion_tokens") or body.get("max_tokens")
        stop = body.get("stop") or []
        stops = [stop] if isinstance(stop, str) else stop
        choices = [
            Choice([], "tool_calls", [], tool_call)
            if tool_call is not None
            else _generate(answers[index % len(answers)], budget, stops)
            for index in range(body.get("n") or 1)
        ]
        if body.get("model") != base_model:
            for choice in choices:
                choice.reasoning = self.reasoning
                choice.message_extras = dict(self.message_extras)
                choice.choice_extras = dict(self.choice_extras)
        return choices

    def _tool_call(self, body: JSON) -> ToolCall | None:
        if not body.get("tools") or body.get("tool_choice") == "none":
            return None
        return self.tool_call(body) if callable(self.tool_call) else self.tool_call


def _generate(text: str, budget: int | None, stops: list[str]) -> Choice:
    cuts = [position for position in (text.find(stop) for stop in stops if stop) if position >= 0]
    if cuts:
        text = text[: min(cuts)]
    tokens = tokenize(text)
    finish = "stop"
    if budget is not None and len(tokens) > budget:
        tokens, finish = tokens[:budget], "length"
    return Choice(tokens, finish, [[(token, 1.0)] for token in tokens])


def word_count(content: Any) -> int:
    """A stand-in token count for usage: words, through content parts and prompt batches."""
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(
            word_count(part.get("text") if isinstance(part, dict) else part) for part in content
        )
    return 0
