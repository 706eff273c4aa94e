"""Training progress on the console: a rich bar on a terminal, one line per optimiser step.

The per-step lines go through the same console, so in cron logs (no terminal) they are the
whole record: step, loss, reward margin and reward accuracy as TRL computes them on the batch.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import TrainerCallback

REPORTED = ("loss", "rewards/margins", "rewards/accuracies")


def step_line(step: int, total: int, logs: dict[str, float]) -> str:
    values = "  ".join(f"{key} {logs[key]:.4f}" for key in REPORTED if key in logs)
    return f"step {step}/{total}  {values}"


class RichProgress(TrainerCallback):
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.progress = Progress(
            TextColumn("[bold]DPO[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("", total=state.max_steps)

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.progress is None or not logs or "loss" not in logs:
            return  # the end-of-training summary has no per-step loss
        line = step_line(state.global_step, state.max_steps, logs)
        self.progress.update(self.task, completed=state.global_step, description=line)
        self.progress.console.print(line)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
