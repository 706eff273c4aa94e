"""Benchmark of the trainer (not a test): DPO pairs/s and peak resident memory, side by side.

    python -m bench.trainer                  # the tiny random model, then the demo model
    python -m bench.trainer --steps 8 --no-demo
    python -m bench.trainer --model DIR      # any local model directory instead of the demo

Two reference setups per model, each in a fresh subprocess so that its memory is its own:
`self` is what `conscience train` does (one copy of the weights; the reference is the base with
the LoRA adapter disabled), `separate` hands TRL a second copy of the base model as
`ref_model`. Two peaks are reported: the whole process (`ru_maxrss`) and the training phase
alone (the kernel's high-water mark, reset through /proc/self/clear_refs once the models are
loaded). transformers maps float32 safetensors lazily, so weight pages enter RSS as training
touches them, once per model copy; "above imports" subtracts the interpreter, torch and TRL.
pairs/s counts the steps after the first (warm-up). Target: self-reference peak memory <= 60% of the
two-model setup. The demo model is used only when it has already been converted (`conscience models
fetch-demo` or a first `conscience serve --backend local`); otherwise it is skipped.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.60
ANSWER = (
    "Mix five hundred grams of flour with ten grams of salt, seven grams of yeast and three "
    "hundred and fifty millilitres of warm water, knead for ten minutes, let it rise for an "
    "hour, shape it, let it rise again and bake it at two hundred and twenty degrees."
)
REFUSAL = "I'm sorry, but I cannot help with that request."


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_high_water_mark() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS


def high_water_mark_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Child process: one short DPO run; returns its speed and memory."""
    from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback
    from trl import DPOTrainer

    from trainer.common.config import TorchDtype
    from trainer.common.models import load_tokenizer, resolve_dtype
    from trainer.nightly.benign_prompts import BENIGN_PROMPTS
    from trainer.nightly.config import TrainConfig
    from trainer.nightly.dataset import PreferencePair, to_hf_dataset
    from trainer.nightly.dpo import (
        build_dpo_trainer,
        dpo_arguments,
        load_policy,
    )

    after_imports = peak_rss_mib()
    config = TrainConfig(
        base_model=args.model,
        max_steps=args.steps,
        batch_size=args.batch_size,
        gradient_accumulation=1,
        max_length=256,
        dtype=TorchDtype.FLOAT32,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    pairs = [
        PreferencePair(f"p{index}", [{"role": "user", "content": prompt}], ANSWER, REFUSAL)
        for index, prompt in enumerate(BENIGN_PROMPTS)
    ]
    tokenizer = load_tokenizer(args.model)
    policy = load_policy(config, None)
    with tempfile.TemporaryDirectory() as output_dir:
        if args.child == "self":
            trainer = build_dpo_trainer(config, policy, tokenizer, pairs, Path(output_dir))
        else:
            copy = AutoModelForCausalLM.from_pretrained(
                args.model, dtype=resolve_dtype(config.dtype)
            )
            trainer = DPOTrainer(
                model=policy,
                ref_model=copy,
                args=dpo_arguments(config, Path(output_dir)),
                train_dataset=to_hf_dataset(pairs),
                processing_class=tokenizer,
            )
            trainer.remove_callback(PrinterCallback)
        step_ends: list[float] = []

        class StepClock(TrainerCallback):
            def on_step_end(self, *_: Any, **__: Any) -> None:
                step_ends.append(time.perf_counter())

        trainer.add_callback(StepClock())
        reset_high_water_mark()
        trainer.train()
    return {
        "pairs_per_s": (len(step_ends) - 1)
        * args.batch_size
        / (step_ends[-1] - step_ends[0]),
        "peak_rss_mib": peak_rss_mib(),
        "training_peak_mib": high_water_mark_mib(),
        "rss_after_imports_mib": after_imports,
    }


def run_child(model_dir: str, reference: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.trainer", "--child", reference, "--model", model_dir,
        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        f"--{'' if args.gradient_checkpointing else 'no-'}gradient-checkpointing",
    ]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{reference} run on {model_dir} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def models_to_run(args: argparse.Namespace, workdir: Path) -> list[tuple[str, str]]:
    from tests.fixtures.tiny_model import build_tiny_model

    models = [("tiny (2-layer random Qwen2)", str(build_tiny_model(workdir / "tiny")))]
    if args.model:
        models.append((args.model, args.model))
    elif args.demo:
        from service.backends.local.demo import DEMO_SERVED_NAME, demo_model_dir
        from service.backends.local.loader import is_converted
        from service.settings import load_settings

        demo = demo_model_dir(load_settings())
        if is_converted(demo):
            models.append((f"demo ({DEMO_SERVED_NAME}, float32)", str(demo)))
        else:
            print(f"skipping the demo model: not converted at {demo} (`conscience models fetch-demo`)")
    return models


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4, help="DPO optimiser steps per run (>= 2)")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per step")
    parser.add_argument("--model", help="a local model directory to use instead of the demo model")
    parser.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False,
        help="recompute activations in the backward pass (less activation memory)",
    )
    parser.add_argument("--child", choices=["self", "separate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is warm-up)")
    if args.child:
        print(json.dumps(measure(args)))
        return

    checkpointing = "on" if args.gradient_checkpointing else "off"
    print(
        f"DPO, {args.steps} steps of {args.batch_size} pair(s), LoRA r=16, float32, gradient "
        f"checkpointing {checkpointing}, one subprocess per row"
    )
    print(
        f"{'model':<44} {'reference':<10} {'pairs/s':>8} {'peak RSS MiB':>13} "
        f"{'training peak MiB':>18} {'above imports':>14}"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for label, model_dir in models_to_run(args, Path(workdir)):
            results = {ref: run_child(model_dir, ref, args) for ref in ("self", "separate")}
            for reference, result in results.items():
                above = result["training_peak_mib"] - result["rss_after_imports_mib"]
                print(
                    f"{label:<44} {reference:<10} {result['pairs_per_s']:>8.2f} "
                    f"{result['peak_rss_mib']:>13.0f} {result['training_peak_mib']:>18.0f} "
                    f"{above:>14.0f}"
                )
            for key, title in (("peak_rss_mib", "peak RSS"), ("training_peak_mib", "training peak")):
                ratio = results["self"][key] / results["separate"][key]
                verdict = "meets" if ratio <= TARGET_RATIO else "misses"
                print(
                    f"{'':<44} self/separate {title} = {ratio:.0%} "
                    f"({verdict} the {TARGET_RATIO:.0%} target)"
                )


if __name__ == "__main__":
    main()
