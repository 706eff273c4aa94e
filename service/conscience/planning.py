"""One planning call per request: what the conscience will do with it, decided before anything
is generated — mode, framework, judge style and model, the choices it may judge (--max-n),
windowed or buffered enforcement, and the review slots it is admitted with.

`RequestPlanner.plan` raises a typed refusal (`PolicyRefusal`, with a code) for what the
operator's policy does not allow, and `ReviewsSaturated` when no review has room; the HTTP edge
maps both to status codes and decides none of this itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from service.conscience.admission import Reservation, ReviewsSaturated
from service.conscience.bounds import DraftLimits
from service.conscience.pipeline import CheckContext, ConsciencePipeline
from service.conscience.policy import (
    JudgeStyles,
    PolicyRefusal,
    judge_model_or_refuse,
    request_framework,
    request_mode,
)
from service.conscience.review import ReviewPolicy
from service.core.backend import JSON
from service.frameworks import Framework
from service.settings import EnforceStreaming, JudgeStyle, Mode, MonitorOverflow, Settings

Endpoint = Literal["chat", "completions", "responses"]
CheckEndpoint = Literal["check", "moderations"]
# How a planned request is answered: as the upstream gives it (off, monitor), or enforced —
# judged whole before the client gets any of it (a completion, or a buffered stream), or
# window by window as it streams.
RouteName = Literal["pass_through", "pass_through_stream", "enforced", "enforced_stream", "windowed_stream"]
OUTPUT_BUDGETS = ("max_tokens", "max_completion_tokens")  # a request's bounds on its answer


class RequestShape(Protocol):
    """What planning reads of a surface (service/api/checked_plan.py `Surface` is one)."""

    def validate(self, body: JSON) -> None:
        """Raise for input the conscience cannot judge (checked only while it is on)."""

    def prompt_count(self, body: JSON) -> int: ...


class Caller(Protocol):
    """The client's API key as planning reads it (service/security/cache.py ClientIdentity)."""

    @property
    def id(self) -> str: ...

    @property
    def framework(self) -> str | None: ...

    @property
    def mode(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Asked:
    """What a request asks of the conscience (its `conscience` options; None: the default)."""

    framework: str | None = None
    mode: Mode | None = None
    judge_style: JudgeStyle | None = None


@dataclass(slots=True)
class Plan:
    body: JSON  # what goes upstream (the policy model named, the `conscience` options out)
    mode: Mode
    framework: Framework
    context: CheckContext
    reserved: Reservation  # the review slots charged at admission, before generation
    windowed: bool = False  # an enforce stream judged window by window (else: one window)

    @property
    def route(self) -> RouteName:
        if self.mode is not Mode.ENFORCE:
            return "pass_through_stream" if self.body.get("stream") else "pass_through"
        if self.windowed:
            return "windowed_stream"
        return "enforced_stream" if self.body.get("stream") else "enforced"


class RequestPlanner:
    def __init__(
        self, settings: Settings, frameworks: dict[str, Framework], pipeline: ConsciencePipeline,
        judge_styles: JudgeStyles,
    ) -> None:
        self._settings = settings
        self._frameworks = frameworks
        self._pipeline = pipeline
        self._judge_styles = judge_styles

    def plan(
        self, shape: RequestShape, body: JSON, asked: Asked, caller: Caller | None, *, endpoint: Endpoint,
        judge_model: str | None, request_id: str, client_request_id: str | None = None,
        context_len: int | None = None,
    ) -> Plan:
        """The plan of one request whose upstream `body` names the policy model (`context_len`:
        its context length, where known); raises PolicyRefusal, the surface's own refusal
        (`shape.validate`), or ReviewsSaturated — that last, so that nothing after an admission
        can refuse the request."""
        self._check_output_budget(body, context_len)
        framework = self._framework(asked, caller)
        key_mode = Mode(caller.mode) if caller and caller.mode else None
        mode = request_mode(asked.mode, key_mode, self._settings)
        policy = self._policy(
            framework, asked, judge_model, max_repairs=self._settings.repair.max_attempts, limits=DraftLimits.of(body)
        )
        choices = self._choice_count(shape, body)
        if mode is not Mode.OFF:
            shape.validate(body)
        context = CheckContext(
            request_id=request_id, endpoint=endpoint, mode=mode, policy=policy, policy_model=str(body["model"]),
            api_key_id=caller.id if caller else None, client_request_id=client_request_id,
        )
        windowed = mode is Mode.ENFORCE and bool(body.get("stream")) and self._windowed(body)
        return Plan(body, mode, framework, context, self._admitted(mode, choices), windowed)

    def plan_check(
        self, answers: int, asked: Asked, caller: Caller | None, *, endpoint: CheckEndpoint, repair: bool,
        policy_model: str, judge_model: str | None, request_id: str, client_request_id: str | None = None,
        answers_param: str = "answers",
    ) -> Plan:
        """The plan of a check call (answers a gateway already has, nothing generated): the
        same framework, judge style and judge model decisions as `plan`; recorded in enforce
        mode when a repair may replace an answer, else monitor (a verdict alone reports it).
        The caller waits for the verdicts, so its slots are running ones whatever the mode.
        PolicyRefusal (invalid_request, `answers_param`) past --max-n answers."""
        limit = self._settings.limits.max_n
        if answers > limit:
            raise PolicyRefusal("invalid_request", f"{answers} answers; at most {limit} per request on this server.",
                                answers_param)
        framework = self._framework(asked, caller)
        # Without a repair asked for, a flagged answer is only reported (no repair is drafted).
        policy = self._policy(
            framework, asked, judge_model, max_repairs=self._settings.repair.max_attempts if repair else 0
        )
        mode = Mode.ENFORCE if repair else Mode.MONITOR
        context = CheckContext(
            request_id=request_id, endpoint=endpoint, mode=mode, policy=policy, policy_model=policy_model,
            api_key_id=caller.id if caller else None, client_request_id=client_request_id,
        )
        return Plan({"model": policy_model}, mode, framework, context, self._pipeline.admit(Mode.ENFORCE, answers))

    def _check_output_budget(self, body: JSON, context_len: int | None) -> None:
        """Refused (invalid_request): an output budget no answer can have, past
        --max-tokens-limit or the served model's context length (vLLM says so too; the embedded
        engine would silently cut it)."""
        bounds = [(self._settings.limits.max_tokens, "this server's limit (--max-tokens-limit)"),
                  (context_len, f"the context length of `{body['model']}`")]
        for param in OUTPUT_BUDGETS:
            wanted = body.get(param)
            for bound, what in bounds:
                if wanted is not None and bound is not None and wanted > bound:
                    message = f"{param} is {wanted}, more than {what}: {bound} tokens."
                    raise PolicyRefusal("invalid_request", message, param)

    def _framework(self, asked: Asked, caller: Caller | None) -> Framework:
        name = request_framework(asked.framework, caller.framework if caller else None, self._settings)
        framework = self._frameworks.get(name)
        if framework is None:
            raise PolicyRefusal(
                "invalid_request",
                f"Unknown conscience framework {name!r}; available: {', '.join(sorted(self._frameworks))}.",
                "conscience.framework",
            )
        return framework

    def _policy(
        self, framework: Framework, asked: Asked, judge_model: str | None, *, max_repairs: int,
        limits: DraftLimits = DraftLimits(),
    ) -> ReviewPolicy:
        """`limits`: the request's own on its answer, which every repair draft honours."""
        return ReviewPolicy(
            framework=framework,
            style=self._judge_styles.for_request(asked.judge_style),
            max_repairs=max_repairs,
            failure_policy=self._settings.policy.failure_policy,
            judge_model=judge_model_or_refuse(judge_model),
            limits=limits,
        )

    def _choice_count(self, shape: RequestShape, body: JSON) -> int:
        """The choices to judge: `n` for each prompt. Refused (invalid_request) when those
        generated for them (`best_of` for each prompt, when larger) exceed --max-n: each is
        judged or, with best_of, generated upstream, so a batch must not multiply past the bound."""
        prompts = shape.prompt_count(body)
        n = body.get("n") or 1
        best_of = body.get("best_of")
        best_of = best_of if isinstance(best_of, int) and not isinstance(best_of, bool) else 1
        per_prompt = max(n, best_of)
        limit = self._settings.limits.max_n
        if prompts * per_prompt > limit:
            name = "best_of" if best_of > n else "n"
            asked = f"{name} = {per_prompt}"
            if prompts > 1:
                asked = f"{prompts} prompts × {name} = {per_prompt}: {prompts * per_prompt} choices"
            raise PolicyRefusal(
                "invalid_request", f"{asked}; at most {limit} choices per request on this server.",
                "prompt" if prompts > 1 and name == "n" else name,
            )
        return prompts * n

    def _windowed(self, body: JSON) -> bool:
        """Windowed enforce streaming applies to text and reasoning, any n; calls, logprobs and
        batches of prompts are buffered (judged in one window once generated)."""
        return (
            self._settings.policy.enforce_streaming is EnforceStreaming.WINDOWED
            and not body.get("tools") and not body.get("functions")
            and not body.get("logprobs")
            and not isinstance(body.get("prompt"), list)
        )

    def _admitted(self, mode: Mode, choices: int) -> Reservation:
        """The review slots for `choices`, charged before anything is generated; a monitor
        request without room is answered unreviewed only where the operator chose so (its
        choices are then recorded unchecked, in `check_later`)."""
        try:
            return self._pipeline.admit(mode, choices)
        except ReviewsSaturated:
            if mode is Mode.MONITOR and self._settings.limits.monitor_overflow is MonitorOverflow.RECORD_UNCHECKED:
                return Reservation.empty(mode)
            raise
