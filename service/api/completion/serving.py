"""Where the legacy completion surface keeps its text, for the shared checked serving; a choice
reaches the client with its text and metadata only (service/api/forwarded_fields.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from service.api.forwarded_fields import forwarded_choice
from service.core.backend import JSON, Backend
from service.errors import APIError


def prompts_of(body: JSON) -> list[str]:
    """The prompt texts; token-id prompts cannot be shown to the judge."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) and prompt:
        return prompt
    raise APIError(
        400,
        "prompt must be a string or a list of strings while the conscience is on "
        "(token-id prompts cannot be judged); use conscience mode 'off' to send token ids.",
        param="prompt",
    )


class CompletionSurface:
    endpoint: Literal["completions"] = "completions"

    def validate(self, body: JSON) -> None:
        prompts_of(body)

    def prompt_count(self, body: JSON) -> int:
        # A batch is a list of texts or of token-id lists; one list of ints is one prompt.
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
            return len(prompt)
        return 1

    async def create(self, backend: Backend, body: JSON) -> JSON:
        return await backend.completion(body)

    def stream(self, backend: Backend, body: JSON) -> AsyncIterator[JSON]:
        return backend.completion_stream(body)

    def conversations(self, body: JSON, choice_count: int) -> list[list[JSON]]:
        # OpenAI orders choices prompt by prompt, `n` per prompt.
        prompts = prompts_of(body)
        per_prompt = max(1, choice_count // len(prompts))
        return [
            [{"role": "user", "content": prompts[min(i // per_prompt, len(prompts) - 1)]}]
            for i in range(choice_count)
        ]

    def choice_text(self, choice: JSON) -> str:
        return choice.get("text") or ""

    def forwarded(self, choice: JSON, body: JSON) -> JSON:
        return forwarded_choice(choice, body, {"text": lambda text: text})

    def merge_deltas(self, chunk_choices: list[JSON]) -> JSON:
        return {"text": "".join(c.get("text") or "" for c in chunk_choices)}

    def delta_text(self, chunk_choice: JSON) -> str | None:
        return chunk_choice.get("text") or ""

    def tool_calls(self, choice: JSON) -> list[JSON]:
        return []  # a text completion calls no tools

    def rewrite_tool_calls(self, choice: JSON, calls: list[JSON], finish_reason: str) -> None:
        raise NotImplementedError("text completions have no tool calls")

    def tool_call_chunk(self, head: JSON, index: int, calls: list[JSON]) -> JSON:
        raise NotImplementedError("text completions have no tool calls")

    def rewrite_choice(self, choice: JSON, text: str, finish_reason: str) -> None:
        choice["text"] = text
        choice["finish_reason"] = finish_reason
        choice["logprobs"] = None

    def text_chunk(self, head: JSON, index: int, text: str, finish_reason: str | None) -> JSON:
        return {
            **head,
            "object": "text_completion",
            "choices": [{"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}],
        }
