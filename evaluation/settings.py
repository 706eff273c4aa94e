"""The evaluation's settings: the proxy's (so it measures exactly what the proxy runs) plus its own.

`conscience eval` reads the same `CONSCIENCE_*` variables, `.env` and `--config` file as `conscience
serve`; the `evaluation` group below exists only here, so the proxy neither accepts nor documents it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field, SecretStr

from service.setting_groups import SettingGroup
from service.setting_names import FLAT_NAMES
from service.settings import Settings


class EvaluationGroup(SettingGroup):
    """The misalignment judge of `conscience eval misalignment`."""

    judge_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL of the judge that rates answers in `conscience "
        "eval misalignment`; unset: the frozen base model through the configured backend.",
    )
    judge_model: str | None = Field(
        None, description="Model name of the misalignment judge at --eval-judge-url."
    )
    judge_api_key: SecretStr | None = Field(
        None,
        description="Key sent to --eval-judge-url; never logged or echoed. Environment or "
        "CONSCIENCE_EVALUATION__JUDGE_API_KEY_FILE only.",
    )


class EvaluationSettings(Settings):
    flat_names: ClassVar[Mapping[str, str]] = {
        **FLAT_NAMES,
        "evaluation.judge_url": "eval_judge_url",
        "evaluation.judge_model": "eval_judge_model",
        "evaluation.judge_api_key": "eval_judge_api_key",
    }

    evaluation: EvaluationGroup = Field(default_factory=EvaluationGroup, description=EvaluationGroup.__doc__)
