"""The repairer: the frozen judge model rewrites a flagged answer under the framework."""

from __future__ import annotations

from service.backends.base import JSON, Backend
from service.conscience.fencing import fenced_case, unwrap_echoed_fences
from service.conscience.frameworks import Framework


def repair_messages(
    framework: Framework, conversation: list[JSON], answer: str, *, max_chars: int
) -> list[JSON]:
    return [
        {"role": "system", "content": framework.repair_instructions()},
        {"role": "user", "content": fenced_case(conversation, answer, max_chars=max_chars)},
    ]


class Repairer:
    def __init__(
        self, backend: Backend, *, max_tokens: int, max_answer_chars: int, temperature: float = 0.7
    ) -> None:
        self._backend = backend
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._max_chars = max_answer_chars

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
