"""What both pipelines' configs share (TRL-style `<method>_config.py`: `trainer/nightly/config.py`,
`trainer/finetune/config.py`): the `knob` field that carries its CLI help (service/commands/flags.py
turns it into a flag), the dtype choice and the LoRA target modules."""

from __future__ import annotations

from dataclasses import MISSING, field
from enum import StrEnum
from typing import Any


class TorchDtype(StrEnum):
    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


# The projections of the attention and MLP blocks in Llama, Qwen2 and Mistral checkpoints. An
# explicit list rather than PEFT's "all-linear": it keeps MoE routers and other odd linears out,
# which vLLM would refuse to load.
LORA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# The proxy's database variable, then its name before the settings were grouped (read until the
# next release, as the proxy reads it).
DB_URL_VARIABLES = ("CONSCIENCE_STORE__DB_URL", "CONSCIENCE_DB_URL")


def knob(default: Any = MISSING, *, help: str, envvar: str | tuple[str, ...] | None = None, **kwargs: Any) -> Any:
    """A dataclass field carrying its CLI help (and environment variables, if any: the first set
    wins)."""
    return field(default=default, metadata={"help": help, "envvar": envvar}, **kwargs)
