"""How the API answers what the conscience's planning refuses (service/conscience/planning.py):
each typed refusal's status code and OpenAI error type, the same on every surface."""

from __future__ import annotations

from service.conscience.policy import PolicyRefusal
from service.errors import APIError

# The refusal's code -> (status, OpenAI error type).
_STATUS = {
    "invalid_request": (400, "invalid_request_error"),
    "framework_not_allowed": (403, "permission_error"),
    "mode_not_allowed": (403, "permission_error"),
    "judge_style_not_allowed": (403, "permission_error"),
    "judge_model_unknown": (503, "api_error"),
}


def refusal_error(refusal: PolicyRefusal) -> APIError:
    """The API error for `refusal`; a plain invalid request carries no code, as OpenAI's."""
    status, error_type = _STATUS[refusal.code]
    code = None if refusal.code == "invalid_request" else refusal.code
    return APIError(status, refusal.message, error_type=error_type, param=refusal.param, code=code)
