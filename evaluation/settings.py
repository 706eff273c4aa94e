"""The evaluation's settings: the proxy's (so it measures exactly what the proxy runs) plus its own.

`conscience eval` reads the same `CONSCIENCE_*` variables and `.env` as `conscience serve`; the
fields below exist only here, so the proxy neither accepts nor documents them.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from service.settings import Settings


class EvaluationSettings(Settings):
    eval_judge_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL of the judge that rates answers in `conscience "
        "eval misalignment`; unset: the frozen base model through the configured backend.",
    )
    eval_judge_model: str | None = Field(
        None, description="Model name of the misalignment judge at --eval-judge-url."
    )
    eval_judge_api_key: SecretStr | None = Field(
        None,
        description="Key sent to --eval-judge-url; never logged or echoed. Environment or "
        "CONSCIENCE_EVAL_JUDGE_API_KEY_FILE only.",
    )
