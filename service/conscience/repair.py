"""The repairer: the frozen judge model rewrites a flagged answer under the framework."""

from __future__ import annotations

from service.backends.base import JSON, Backend
from service.conscience.fencing import fenced_case, fenced_request, unwrap_echoed_fences
from service.conscience.frameworks import Framework


def regenerate_messages(framework: Framework, conversation: list[JSON], *, max_chars: int) -> list[JSON]:
    """A repair drafted from the request alone, under the framework: the rejected answer is not
    in view, so a small model cannot copy it."""
    return [
        {"role": "system", "content": framework.regenerate_instructions()},
        {"role": "user", "content": fenced_request(conversation, max_chars=max_chars)},
    ]


def repair_messages(
    framework: Framework, conversation: list[JSON], answer: str, *, max_chars: int
) -> list[JSON]:
    return [
        {"role": "system", "content": framework.repair_instructions()},
        {"role": "user", "content": fenced_case(conversation, answer, max_chars=max_chars)},
    ]


class Repairer:
    def __init__(
        self, backend: Backend, *, max_tokens: int, max_answer_chars: int, temperature: float = 0.7,
        candidates: int = 1,
    ) -> None:
        self._backend = backend
        self.candidates_per_call = candidates
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._max_chars = max_answer_chars

    async def candidates(
        self, framework: Framework, conversation: list[JSON], *, judge_model: str
    ) -> list[str]:
        """`candidates_per_call` drafts (one call, `n` choices; a server that ignores `n` gives
        fewer), each an answer to the request alone under the framework."""
        body: JSON = {
            "model": judge_model,
            "messages": regenerate_messages(framework, conversation, max_chars=self._max_chars),
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
            "top_p": 0.95,
        }
        if self.candidates_per_call > 1:
            body["n"] = self.candidates_per_call
        response = await self._backend.chat(body)
        return [
            unwrap_echoed_fences(choice["message"].get("content") or "").strip()
            for choice in response["choices"]
        ]

    async def repair(
        self, framework: Framework, conversation: list[JSON], answer: str, *, judge_model: str
    ) -> str:
        response = await self._backend.chat(
            {
                "model": judge_model,
                "messages": repair_messages(
                    framework, conversation, answer, max_chars=self._max_chars
                ),
                "max_tokens": self._max_tokens,
                "temperature": self._temperature,
                "top_p": 0.95,
            }
        )
        return unwrap_echoed_fences(response["choices"][0]["message"].get("content") or "").strip()
