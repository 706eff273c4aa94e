"""Every knob of `conscience train`, in one place (in the style of TRL's `*_config.py`).

Each field's `help` is the documentation: the CLI builds one `--flag` per field from it, so the
flags and this class never drift. Fields with an `envvar` can also come from the environment
(the database URL and the vLLM key, which should not sit in a crontab).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from trainer.common.config import DB_URL_VARIABLES, LORA_PROJECTIONS, TorchDtype, knob
from trainer.nightly.benign_prompts import QUICK_HELD_OUT_TOKENS, QUICK_REPLY_TOKENS


class PublishTarget(StrEnum):
    VLLM = "vllm"
    LOCAL = "local"


@dataclass
class TrainConfig:
    r"""Configuration of one training run: selection, DPO, evaluation gate, registry, publishing.

    Field help strings are the reference; a few notes that span fields:

    - The reference policy of DPO is always the frozen base model (adapters disabled), also when
      a run continues from the active adapter: one copy of the weights, and every version is
      anchored to the same model the proxy uses as its judge.
    - A run continues from the active adapter when there is one; its LoRA shape (rank, alpha,
      target modules) then comes from that adapter, and `lora_*` only apply to a fresh lineage.
    - `max_steps > 0` overrides `epochs`.
    """

    # --- where things are ------------------------------------------------------------------
    base_model: str = knob(
        help="Base model to train adapters for: a Hugging Face id or a local directory. With "
        "vLLM, the same name vLLM serves as the base (the frozen judge)."
    )
    db_url: str = knob(
        "sqlite+aiosqlite:///./conscience.db",
        help="SQLAlchemy async URL of the proxy's database (postgresql+asyncpg://… in production).",
        envvar=DB_URL_VARIABLES,
    )
    adapters_dir: Path = knob(
        Path("./adapters"),
        help="Directory that holds one sub-directory per adapter version (PEFT format).",
    )
    name_prefix: str = knob(
        "conscience", help="Adapter versions are named <prefix>-v<N>, N counting up."
    )

    # --- selection -------------------------------------------------------------------------
    auto_approve: bool = knob(
        False, help="Train on pending triples as well as approved ones (no human review)."
    )
    framework: str | None = knob(None, help="Only triples judged under this framework.")
    since: datetime | None = knob(None, help="Only triples logged at or after this time (UTC).")
    until: datetime | None = knob(None, help="Only triples logged before this time (UTC).")
    min_pairs: int = knob(
        16, help="Fewer selected triples than this: exit 0 with 'nothing to do' and train nothing."
    )
    eval_fraction: float = knob(
        0.1,
        help="Share of the selected triples held out for the evaluation gate (not trained on, "
        "left for a later run), picked by a seeded hash of each triple's id.",
    )

    # --- DPO -------------------------------------------------------------------------------
    beta: float = knob(
        0.1, help="DPO beta: how far the policy may move from the reference (higher = less)."
    )
    learning_rate: float = knob(5e-5, help="AdamW learning rate of the LoRA weights.")
    epochs: float = knob(1.0, help="Passes over the training pairs.")
    max_steps: int = knob(-1, help="Stop after this many optimiser steps (> 0 overrides --epochs).")
    batch_size: int = knob(4, help="Pairs per forward pass.")
    gradient_accumulation: int = knob(4, help="Forward passes per optimiser step.")
    max_length: int = knob(
        2048, help="Longest prompt + answer in tokens; longer pairs are cut at the end."
    )
    sft_weight: float = knob(
        0.0,
        help="Weight of an added SFT loss on the chosen answers (0 = pure DPO). TRL's "
        "loss_type=['sigmoid','sft'] with loss_weights=[1, sft_weight].",
    )
    seed: int = knob(42, help="Seed of LoRA initialisation, data order and the held-out split.")
    dtype: TorchDtype = knob(
        TorchDtype.AUTO,
        help="Weights dtype: auto = bfloat16 on a GPU that supports it, else float32.",
    )
    gradient_checkpointing: bool = knob(
        False, help="Recompute activations in the backward pass: less memory, about a fifth slower."
    )
    lora_rank: int = knob(16, help="LoRA rank of a fresh lineage.")
    lora_alpha: int = knob(32, help="LoRA alpha (scale = alpha / rank) of a fresh lineage.")
    lora_target_modules: list[str] = knob(
        default_factory=lambda: list(LORA_PROJECTIONS),
        help="Module names LoRA wraps (attention and MLP projections; no modules_to_save, "
        "no DoRA: vLLM refuses both).",
    )

    # --- evaluation gate -------------------------------------------------------------------
    max_accuracy_drop: float = knob(
        0.05,
        help="Fail the version when its held-out preference accuracy is below the previous "
        "version's on the same rows by more than this.",
    )
    max_refusal_increase: float = knob(
        0.05,
        help="Fail the version when its refusal rate on benign prompts exceeds the previous "
        "version's by more than this.",
    )
    benign_prompts: Path | None = knob(
        None,
        help="Text file of benign prompts for the refusal check, one per line (default: the "
        "built-in set in trainer/nightly/benign_prompts.py).",
    )
    gate_max_new_tokens: int = knob(
        32, help="Tokens generated (greedy) per benign prompt in the refusal check."
    )
    quick_gate: bool = knob(
        False,
        help="A gate sized for a CPU (the demo model): the built-in 24 short benign prompts "
        "(unless --benign-prompts names a file), each answered in at most 12 tokens, and "
        "held-out rows scored on their first 512 tokens.",
    )

    # --- publishing ------------------------------------------------------------------------
    publish: PublishTarget = knob(
        PublishTarget.LOCAL,
        help="local: mark the version active (the embedded engine hot-loads it); vllm: load it "
        "into vLLM under its versioned name, check it is listed, then mark it active.",
    )
    vllm_url: str | None = knob(
        None, help="vLLM base URL (http://vllm:8000), for --publish vllm."
    )
    vllm_adapters_dir: Path | None = knob(
        None,
        help="--adapters-dir as vLLM sees it when it mounts the volume elsewhere "
        "(default: the same path).",
    )
    keep_loaded: int = knob(
        3, help="Adapter versions kept loaded in vLLM (newest first); older ones are unloaded."
    )
    vllm_timeout_s: float = knob(
        120.0, help="Timeout of one vLLM admin call (loading an adapter takes a while)."
    )

    @property
    def gate_reply_tokens(self) -> int:
        return min(self.gate_max_new_tokens, QUICK_REPLY_TOKENS) if self.quick_gate else self.gate_max_new_tokens

    @property
    def gate_max_length(self) -> int:
        return min(self.max_length, QUICK_HELD_OUT_TOKENS) if self.quick_gate else self.max_length

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")
        if self.min_pairs < 1:
            raise ValueError("min_pairs must be at least 1")
        if self.publish == PublishTarget.VLLM and not self.vllm_url:
            raise ValueError("--publish vllm needs --vllm-url")
        if self.keep_loaded < 1:
            raise ValueError("keep_loaded must be at least 1 (the active version stays loaded)")
