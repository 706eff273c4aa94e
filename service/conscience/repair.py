"""The repairer: the frozen judge model rewrites a flagged answer under the framework.

`repair` drafts a whole new answer; `repair_stream` streams one, or, when the client already
has the beginning of the answer (windowed enforce streaming), continues from it: the released
text is the assistant's own last message, continued in place (vLLM's
`continue_final_message=True, add_generation_prompt=False`), so its deltas append to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from service.backends.base import JSON, Backend
from service.conscience.fencing import fenced_case, fenced_request, unwrap_echoed_fences
from service.conscience.frameworks import Framework
from service.conscience.usage import record as record_usage


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


def continuation_messages(
    framework: Framework, conversation: list[JSON], rejected: str, released: str, *, max_chars: int
) -> list[JSON]:
    """The repair that continues `released` (the part of `rejected` the client has)."""
    return [
        {"role": "system", "content": framework.continue_instructions()},
        {"role": "user", "content": fenced_case(conversation, rejected, max_chars=max_chars)},
        {"role": "assistant", "content": released},
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
        record_usage("repair", response.get("usage"), choices=len(response.get("choices") or []) or 1)
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
        record_usage("repair", response.get("usage"))
        return unwrap_echoed_fences(response["choices"][0]["message"].get("content") or "").strip()

    async def repair_stream(
        self,
        framework: Framework,
        conversation: list[JSON],
        answer: str,
        *,
        judge_model: str,
        released: str = "",
    ) -> AsyncIterator[str]:
        """The repair's text deltas: a new answer to `conversation` when `released` is empty,
        drafted from the request alone as `candidates` drafts it (the rejected `answer` not in
        view, so that a small model cannot copy it), else a continuation of `released` (what
        the client has of the rejected `answer`). The call's usage is recorded also when the
        stream is closed early (a flagged window): with vLLM's `continuous_usage_stats` every
        chunk reports the tokens so far."""
        body: JSON = {
            "model": judge_model,
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
            "top_p": 0.95,
        }
        if released:
            body["messages"] = continuation_messages(
                framework, conversation, answer, released, max_chars=self._max_chars
            )
            body["continue_final_message"], body["add_generation_prompt"] = True, False
        else:
            body["messages"] = regenerate_messages(framework, conversation, max_chars=self._max_chars)
        started = bool(released)
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        usage = None
        try:
            async for chunk in self._backend.chat_stream(body):
                usage = chunk.get("usage") or usage
                for text in self._stream_texts(chunk, started):
                    started = True
                    yield text
        finally:
            record_usage("repair", usage)

    @staticmethod
    def _stream_texts(chunk: JSON, started: bool) -> list[str]:
        texts = []
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if not isinstance(text, str) or not text:
                continue
            if not started:  # a fresh answer starts at its first visible character
                text = text.lstrip()
                if not text:
                    continue
                started = True
            texts.append(text)
        return texts
