"""Conscience policy for one request: which framework, mode and judge style apply, who judges, and how
the reviews of its choices read to the client.

The HTTP layer (service/api/checked_serving.py) asks these questions and maps a
`PolicyRefusal` to an API error; it decides none of them itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.conscience.outcome import UNCHECKED, Review
from service.settings import JudgeStyle, Mode, Settings

PENDING = "pending"  # monitor mode: the review runs after the answer has gone out
# The summary of several choices is the worst of their verdicts.
_SEVERITY = {"ethical": 0, "neutral": 1, PENDING: 2, UNCHECKED: 3, "unethical": 4}
# Lowering the mode below the default is lowering strictness; only the operator may allow it.
_STRICTNESS = {Mode.OFF: 0, Mode.MONITOR: 1, Mode.ENFORCE: 2}

REFUSED_FINISH = "content_filter"  # a refusal replaced the answer
REPAIRED_FINISH = "stop"  # a repair replaced the answer: it ended normally


class PolicyRefusal(Exception):
    """The request asks for something the operator's policy does not allow (or cannot serve)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code  # framework_not_allowed | mode_not_allowed | judge_style_not_allowed | judge_model_unknown
        self.message = message
        self.param = param


def request_framework(requested: str | None, key_framework: str | None, settings: Settings) -> str:
    """The name of the request's framework: its key's or the server's, or another only where the
    operator lets clients choose it (a lenient framework meant for one key stays that key's)."""
    default = key_framework or settings.policy.framework
    if requested is None or requested == default:
        return default
    if not settings.policy.lets_clients_choose_framework(requested):
        raise PolicyRefusal(
            "framework_not_allowed",
            f"conscience framework {requested!r} is not this key's {default!r}, and the operator "
            "has not let clients choose it (CONSCIENCE_POLICY__CLIENT_FRAMEWORKS).",
            "conscience.framework",
        )
    return requested


def request_mode(requested: Mode | None, key_mode: Mode | None, settings: Settings) -> Mode:
    """The request's mode; asking for less checking than the key's or the server's default
    is allowed only where the operator said so."""
    default = key_mode or settings.policy.mode
    if requested is None or requested is default:
        return default
    if _STRICTNESS[requested] < _STRICTNESS[default] and not settings.policy.allow_weaker_mode:
        raise PolicyRefusal(
            "mode_not_allowed",
            f"conscience mode {requested.value!r} is weaker than this key's {default.value!r}; "
            "the operator has not allowed lowering it (CONSCIENCE_POLICY__ALLOW_WEAKER_MODE).",
            "conscience.mode",
        )
    return requested


class JudgeStyleError(ValueError):
    """The judge style configured cannot be served (latent without a probe)."""


@dataclass(frozen=True, slots=True)
class JudgeStyles:
    """The one owner of "which judge style": the one the server judges in, and the others a
    client may ask for. Decided once, when the backend is built (`serving`); the proxy's
    planning and every evaluation read it from here."""

    served: JudgeStyle
    client_choices: frozenset[JudgeStyle] = frozenset()

    @classmethod
    def serving(cls, settings: Settings, probe: object | None) -> JudgeStyles:
        """The styles served with `settings` by a backend holding `probe` (None: none): with
        `judge_style` left unset, a backend with a probe for its model (the demo model's ships)
        judges `latent`, any other `fast`. JudgeStyleError: latent without a probe."""
        served = settings.judge.style
        if "style" not in settings.judge.model_fields_set and probe is not None:
            served = JudgeStyle.LATENT
        elif served is JudgeStyle.LATENT and probe is None:
            raise JudgeStyleError(
                "--judge-style latent needs a probe for the served model: set --probe-path to one "
                "(`conscience calibrate --probe` fits it)"
            )
        return cls(served, settings.judge.allowed_client_styles)

    def for_request(self, requested: JudgeStyle | None) -> JudgeStyle:
        """The request's judge style: the served one, or another the operator lets clients pick."""
        if requested is None or requested is self.served:
            return self.served
        if requested not in self.client_choices:
            raise PolicyRefusal(
                "judge_style_not_allowed",
                f"judge style {requested.value!r} is not the server's {self.served.value!r}, and the "
                "operator has not let clients choose it (CONSCIENCE_CLIENT_JUDGE_STYLES).",
                "conscience.judge_style",
            )
        return requested


def judge_model_or_refuse(judge_model: str | None) -> str:
    """The judge is never the client's choice (service/adapters/served_models.py): with none
    named, checked requests are refused."""
    if judge_model is None:
        raise PolicyRefusal(
            "judge_model_unknown",
            "The conscience has no judge model: set CONSCIENCE_JUDGE__MODEL (--judge-model) "
            "or CONSCIENCE_SERVING__MODEL, or serve exactly one base model upstream.",
        )
    return judge_model


def worst_verdict(verdicts: Iterable[str]) -> str:
    """The summary verdict of a response's choices; `unchecked` when there are none."""
    return max(verdicts, key=lambda verdict: _SEVERITY.get(verdict, 0), default=UNCHECKED)


def replaces_answer(review: Review) -> bool:
    return review.repaired or review.refused


def finish_reason(review: Review) -> str:
    """The finish reason of a choice whose answer the conscience replaced."""
    return REFUSED_FINISH if review.refused else REPAIRED_FINISH
