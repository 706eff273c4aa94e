"""The nightly run on several processes: `accelerate launch --num_processes N -m trainer.nightly.cli train …`.

Every process trains (DDP through Accelerate, which TRL's trainer uses: NCCL on GPUs, gloo on
the CPU), but one run is still one run. Rank 0 alone takes the training lock, selects the
triples, names the version, saves the adapter, gates it, records it (marking the triples) and
publishes it; it hands the other ranks what they train on — the training pairs and the parent
adapter — with one broadcast, or nothing (the lock was held, too few pairs, an error), and
they then exit without touching the database or the adapters directory.

A single process (no `WORLD_SIZE`, or 1) never starts a process group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Plan:
    """What rank 0 tells the others to train on."""

    pairs: Sequence[Any]  # trainer.nightly.dataset.PreferencePair
    parent_path: Path | None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def _state() -> Any:
    from accelerate import PartialState

    return PartialState()  # initialises the process group from the launcher's environment


def share_plan(plan: Plan | None) -> Plan | None:
    """Rank 0: send the plan (None: nothing to train); the others: receive it."""
    import torch.distributed as dist

    _state()
    message: list[Any] = [plan if rank() == 0 else None]
    dist.broadcast_object_list(message, src=0)
    return message[0]
