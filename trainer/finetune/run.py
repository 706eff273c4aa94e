"""`conscience finetune`: supervised LoRA fine-tuning plus the paper's conscience term.

One copy of the weights serves three roles: with the LoRA adapter "policy" enabled it is the
model being trained and the policy that answers probes; with adapters disabled it is the frozen
base that judges, repairs and anchors DPO as the reference. The embedded engine (the proxy's
local backend) runs the judge, the repairs and the policy's answers on its model thread; the
optimiser steps run in a worker thread in between, never at the same time, and switch the
adapter through the engine's own adapter bookkeeping so the two never disagree about it.

The result is registered like any adapter version (status `candidate`, not activated), with
the per-step losses and the number of pairs each conscience step found in its metrics.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from service.backends.local.backend import LocalBackend
from service.backends.local.engine import Engine
from service.backends.local.loader import LoadedModel
from service.conscience.judge import LABELS
from service.conscience.review import ReviewPolicy
from service.conscience.stack import ConscienceKnobs, build_reviewer
from service.frameworks import Framework, load_frameworks
from service.settings import FailurePolicy, JudgeStyle
from service.store.db import Database
from service.store.preference import Message
from trainer.finetune.config import FinetuneConfig
from trainer.finetune.conscience_step import FoundPair, ProbeSettings, probe_policy
from trainer.finetune.data import (
    ChatExample,
    load_chat_examples,
    load_probe_prompts,
    probes_from_examples,
)
from trainer.finetune.losses import (
    TokenBatch,
    completion_logprobs,
    dpo_loss,
    encode_completions,
    sft_loss,
)
from trainer.finetune.model import POLICY_ADAPTER, load_policy_model
from trainer.finetune.register import register_adapter


@dataclass
class PairSet:
    """Pairs found by one conscience step, tokenised, with their (fixed) reference log-probs."""

    pairs: list[FoundPair]
    chosen: TokenBatch
    rejected: TokenBatch
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor


@dataclass
class FinetuneMetrics:
    steps: int = 0
    task_loss: list[float] = field(default_factory=list)
    dpo_loss: list[float | None] = field(default_factory=list)
    pairs_per_step: dict[int, int] = field(default_factory=dict)  # conscience step -> pairs found
    probe_answers: int = 0
    flagged: int = 0
    discarded_drafts: dict[str, int] = field(default_factory=dict)  # reason -> repair drafts
    first_pairs_dpo_loss: dict[str, float] = field(default_factory=dict)  # "start", "end"
    runtime_s: float = 0.0


@dataclass(frozen=True)
class FinetuneResult:
    version_name: str
    path: Path
    metrics: FinetuneMetrics


@dataclass(frozen=True)
class FinetuneInputs:
    """Everything read from files, checked before any weights are loaded."""

    examples: list[ChatExample]
    probes: list[list[Message]]
    framework: Framework

    @classmethod
    def load(cls, config: FinetuneConfig) -> FinetuneInputs:
        examples = load_chat_examples(config.task_data)
        probes = load_probe_prompts(config.probe_data) if config.probe_data else probes_from_examples(examples)
        framework = load_frameworks(config.frameworks_dir).get(config.framework)
        if framework is None:
            raise ValueError(f"unknown framework {config.framework!r}")
        return cls(examples, probes, framework)


class Finetuner:
    def __init__(
        self, config: FinetuneConfig, inputs: FinetuneInputs, loaded: LoadedModel, engine: Engine,
        console: Console,
    ) -> None:
        self.config = config
        self.loaded = loaded
        self.engine = engine
        self.console = console
        self.backend = LocalBackend(engine, default_max_tokens=config.probe_max_tokens)
        self.examples = inputs.examples
        self.probes = inputs.probes
        # The proxy's stack; the knobs FinetuneConfig owns override the proxy's defaults.
        self.reviewer = build_reviewer(self.backend, ConscienceKnobs(
            threshold=config.threshold, judge_max_answer_chars=config.judge_max_answer_chars,
            repair_max_tokens=config.repair_max_tokens,
        ))
        self.review_policy = ReviewPolicy(
            framework=inputs.framework, style=JudgeStyle.FAST, max_repairs=config.max_repairs,
            failure_policy=FailurePolicy.FAIL_OPEN, judge_model=engine.served_base_name,
        )
        trainable = [p for p in loaded.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
        self.metrics = FinetuneMetrics()
        self.first_pairs: PairSet | None = None

    # --- model-side work (worker thread) ---------------------------------------------------

    def _use(self, adapter: str | None) -> None:
        self.engine.adapters.use(adapter)

    def _pair_set(self, pairs: list[FoundPair]) -> PairSet:
        tokenizer, model, limit = self.loaded.tokenizer, self.loaded.model, self.config.max_length
        prompts = [pair.prompt for pair in pairs]
        chosen = encode_completions(tokenizer, prompts, [p.chosen for p in pairs], limit)
        rejected = encode_completions(tokenizer, prompts, [p.rejected for p in pairs], limit)
        self._use(None)
        with torch.no_grad():
            return PairSet(pairs, chosen, rejected,
                           completion_logprobs(model, chosen), completion_logprobs(model, rejected))

    def _dpo(self, pairs: PairSet) -> torch.Tensor:
        model = self.loaded.model
        return dpo_loss(completion_logprobs(model, pairs.chosen), completion_logprobs(model, pairs.rejected),
                        pairs.reference_chosen, pairs.reference_rejected, self.config.beta)

    def _evaluate_dpo(self, pairs: PairSet) -> float:
        self._use(POLICY_ADAPTER)
        with torch.no_grad():
            return float(self._dpo(pairs))

    def _train_step(self, examples: list[ChatExample], pairs: PairSet | None) -> tuple[float, float | None]:
        model = self.loaded.model
        batch = encode_completions(self.loaded.tokenizer, [e.prompt for e in examples],
                                   [e.answer for e in examples], self.config.max_length)
        self._use(POLICY_ADAPTER)
        model.train()
        try:
            with torch.enable_grad():
                task = sft_loss(model, batch)
                loss, alignment = task, None
                if pairs is not None and self.config.alignment_weight > 0:
                    alignment = self._dpo(pairs)
                    loss = task + self.config.alignment_weight * alignment
                loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        finally:
            model.eval()  # the engine generates with dropout off
        return task.item(), None if alignment is None else alignment.item()

    # --- the loop --------------------------------------------------------------------------

    def total_steps(self) -> int:
        if self.config.max_steps > 0:
            return self.config.max_steps
        return max(1, math.ceil(self.config.epochs * len(self.examples) / self.config.batch_size))

    def _batches(self) -> Iterator[list[ChatExample]]:
        generator = random.Random(self.config.seed)
        while True:
            order = list(self.examples)
            generator.shuffle(order)
            for start in range(0, len(order), self.config.batch_size):
                yield order[start : start + self.config.batch_size]

    async def _conscience_step(self, step: int, probe_cursor: int) -> PairSet | None:
        count = self.config.probe_batch
        probes = [self.probes[(probe_cursor + i) % len(self.probes)] for i in range(count)]
        findings = await probe_policy(
            self.backend, self.reviewer, self.review_policy, probes,
            ProbeSettings(POLICY_ADAPTER, self.config.probe_max_tokens, self.config.probe_temperature),
            seed=self.config.seed + 1000 * step,  # + the probe's index: distinct per answer
        )
        self.metrics.pairs_per_step[step] = len(findings.pairs)
        self.metrics.probe_answers += findings.answers
        self.metrics.flagged += findings.flagged
        for reason, count in findings.discarded_drafts.items():
            self.metrics.discarded_drafts[reason] = self.metrics.discarded_drafts.get(reason, 0) + count
        discarded = ", ".join(f"{count} {reason}" for reason, count in sorted(findings.discarded_drafts.items()))
        self.console.print(
            f"conscience step at {step}: {findings.answers} answers, {findings.flagged} flagged, "
            f"{len(findings.pairs)} pair(s)" + (f"; drafts discarded: {discarded}" if discarded else "")
        )
        if not findings.pairs:
            return None
        pairs = await asyncio.to_thread(self._pair_set, findings.pairs)
        if self.first_pairs is None:
            self.first_pairs = pairs
            self.metrics.first_pairs_dpo_loss["start"] = await asyncio.to_thread(self._evaluate_dpo, pairs)
        return pairs

    async def run(self) -> FinetuneMetrics:
        started = time.perf_counter()
        await self.engine.activate_adapter(POLICY_ADAPTER, "")  # already in the model
        total, batches = self.total_steps(), self._batches()
        pairs: PairSet | None = None
        with_conscience = self.config.alignment_weight > 0
        for step in range(total):
            if with_conscience and step % self.config.conscience_every == 0:
                first_probe = step // self.config.conscience_every * self.config.probe_batch
                found = await self._conscience_step(step, first_probe)
                pairs = found or pairs
            task, alignment = await asyncio.to_thread(self._train_step, next(batches), pairs)
            self.metrics.task_loss.append(task)
            self.metrics.dpo_loss.append(alignment)
            dpo_text = "" if alignment is None else f"  dpo {alignment:.4f}"
            self.console.print(f"step {step + 1}/{total}  task {task:.4f}{dpo_text}")
        if self.first_pairs is not None:
            self.metrics.first_pairs_dpo_loss["end"] = await asyncio.to_thread(self._evaluate_dpo, self.first_pairs)
        self.metrics.steps = total
        self.metrics.runtime_s = time.perf_counter() - started
        return self.metrics


async def run_finetune(config: FinetuneConfig, console: Console) -> FinetuneResult:
    inputs = FinetuneInputs.load(config)
    db = Database(config.db_url)
    try:
        await db.ping()  # fail now rather than after hours of training
    finally:
        await db.dispose()
    loaded = await asyncio.to_thread(load_policy_model, config)
    engine = Engine(loaded, max_queued=64, max_concurrent=1, labels=LABELS)
    try:
        metrics = await Finetuner(config, inputs, loaded, engine, console).run()
    finally:
        await engine.close()
    path = await register_adapter(config, loaded, asdict(metrics))
    return FinetuneResult(path.name, path, metrics)
