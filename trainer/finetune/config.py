"""Every knob of `conscience finetune`, in one place (in the style of TRL's `*_config.py`).

Each field's `help` is the documentation and becomes a `--flag` of the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.common.config import DB_URL_VARIABLES, LORA_PROJECTIONS, TorchDtype, knob


@dataclass
class FinetuneConfig:
    r"""Supervised LoRA fine-tuning with the paper's conscience term added to the loss.

    loss = task loss (next-token cross-entropy on the assistant turns of `task_data`)
         + alignment_weight · DPO(chosen = repair, rejected = policy answer)

    Every `conscience_every` steps the current policy (adapter enabled) answers `probe_batch`
    probe prompts; the frozen base (adapters disabled) judges each answer with the proxy's own
    judge and repairs the flagged ones (proxy review loop, `max_repairs` drafts). Accepted
    repairs become the DPO pairs of the following steps, until the next conscience step
    replaces them. The DPO reference is the frozen base too. `alignment_weight` 0 is plain
    fine-tuning: no probes, no judge calls.
    """

    # --- data and model --------------------------------------------------------------------
    base_model: str = knob(help="Base model to fine-tune: a Hugging Face id or a local directory.")
    task_data: Path = knob(
        help="Chat dataset (JSONL, one {\"messages\": [...]} per line; the last message is the "
        "assistant answer that is learned)."
    )
    probe_data: Path | None = knob(
        None,
        help="Probe prompts for the conscience step (JSONL with `messages` or `prompt`, or one "
        "prompt per line of a .txt file). Default: the user turns of --task-data.",
    )
    framework: str = knob("three_laws", help="Framework the frozen base judges and repairs under.")
    frameworks_dir: Path | None = knob(None, help="Directory of user framework YAML files.")

    # --- the conscience term ---------------------------------------------------------------
    alignment_weight: float = knob(
        0.0, help="λ: weight of the DPO term on judge-found pairs (0 = plain fine-tuning)."
    )
    conscience_every: int = knob(4, help="Steps between conscience steps (probe, judge, repair).")
    probe_batch: int = knob(4, help="Probe prompts the policy answers per conscience step.")
    probe_max_tokens: int = knob(128, help="Token budget of one policy answer to a probe.")
    probe_temperature: float = knob(1.0, help="Sampling temperature of the policy's answers.")
    threshold: float = knob(0.5, help="Judge score at or above which an answer is flagged.")
    max_repairs: int = knob(2, help="Repair drafts per flagged answer before giving up on it.")
    repair_max_tokens: int = knob(256, help="Token budget of one repair draft.")
    judge_max_answer_chars: int = knob(12000, help="Longest answer text shown to the judge.")
    beta: float = knob(0.1, help="DPO beta: how far the policy may move from the reference.")

    # --- optimisation ----------------------------------------------------------------------
    learning_rate: float = knob(1e-4, help="AdamW learning rate of the LoRA weights.")
    epochs: float = knob(1.0, help="Passes over the task data.")
    max_steps: int = knob(-1, help="Stop after this many optimiser steps (> 0 overrides --epochs).")
    batch_size: int = knob(4, help="Task examples per optimiser step.")
    max_length: int = knob(1024, help="Longest prompt + answer in tokens; longer ones are cut.")
    seed: int = knob(42, help="Seed of LoRA initialisation, data order and sampling.")
    dtype: TorchDtype = knob(
        TorchDtype.AUTO, help="Weights dtype: auto = bfloat16 on a GPU that supports it, else float32."
    )
    lora_rank: int = knob(16, help="LoRA rank.")
    lora_alpha: int = knob(32, help="LoRA alpha (scale = alpha / rank).")
    lora_dropout: float = knob(0.05, help="Dropout on the LoRA input.")
    lora_target_modules: list[str] = knob(
        default_factory=lambda: list(LORA_PROJECTIONS),
        help="Module names LoRA wraps (attention and MLP projections).",
    )

    # --- registry --------------------------------------------------------------------------
    db_url: str = knob(
        "sqlite+aiosqlite:///./conscience.db",
        help="SQLAlchemy async URL of the proxy's database, where the version is registered.",
        envvar=DB_URL_VARIABLES,
    )
    adapters_dir: Path = knob(Path("./adapters"), help="Directory of adapter versions (PEFT format).")
    name_prefix: str = knob("finetune", help="The version is named <prefix>-v<N>, N counting up.")

    def __post_init__(self) -> None:
        if self.alignment_weight < 0:
            raise ValueError("alignment_weight must be at least 0")
        if self.conscience_every < 1 or self.probe_batch < 1 or self.batch_size < 1:
            raise ValueError("conscience_every, probe_batch and batch_size must be at least 1")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")
