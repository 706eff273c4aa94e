"""The data of `conscience finetune`: chat examples to learn and probe prompts to check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.store.preference import Message, clean_messages


class FinetuneDataError(ValueError):
    """A data file cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class ChatExample:
    prompt: list[Message]  # every turn before the answer
    answer: str  # the last (assistant) turn: what the task loss teaches


def _json_lines(path: Path) -> list[tuple[int, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FinetuneDataError(f"cannot read {path}: {exc}") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise FinetuneDataError(f"{path}:{number}: not JSON: {exc}") from exc
    return rows


def _messages(data: Any, where: str) -> list[Message]:
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not messages or not all(
        isinstance(message, dict) and isinstance(message.get("role"), str) for message in messages
    ):
        raise FinetuneDataError(f"{where}: expected {{\"messages\": [{{\"role\": …, \"content\": …}}, …]}}")
    return clean_messages(messages)


def load_chat_examples(path: Path) -> list[ChatExample]:
    examples = []
    for number, data in _json_lines(path):
        messages = _messages(data, f"{path}:{number}")
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise FinetuneDataError(f"{path}:{number}: the last message must be the assistant's answer")
        examples.append(ChatExample(prompt=messages[:-1], answer=messages[-1]["content"]))
    if not examples:
        raise FinetuneDataError(f"{path}: no examples")
    return examples


def load_probe_prompts(path: Path) -> list[list[Message]]:
    """Conversations to answer: JSONL (`messages`, the assistant answer dropped, or `prompt`)
    or, for any other suffix, one user prompt per non-empty line."""
    if path.suffix != ".jsonl":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise FinetuneDataError(f"cannot read {path}: {exc}") from exc
        probes = [[{"role": "user", "content": line.strip()}] for line in lines if line.strip()]
    else:
        probes = []
        for number, data in _json_lines(path):
            if isinstance(data, dict) and isinstance(data.get("prompt"), str):
                probes.append([{"role": "user", "content": data["prompt"]}])
                continue
            messages = _messages(data, f"{path}:{number}")
            probes.append(messages[:-1] if messages[-1]["role"] == "assistant" else messages)
    if not probes or any(not probe for probe in probes):
        raise FinetuneDataError(f"{path}: no usable probe prompts")
    return probes


def probes_from_examples(examples: list[ChatExample]) -> list[list[Message]]:
    return [example.prompt for example in examples]
