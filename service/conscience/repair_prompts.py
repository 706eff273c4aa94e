"""What the frozen model is shown to draft a repair, and how its replies are read: the messages
of each repair strategy (regenerate, reframe and its answer, continue: service/conscience/repair.py),
the request fenced as data (service/conscience/fencing.py), and a reframe reply's question.
"""

from __future__ import annotations

from service.conscience.fencing import fenced_case, fenced_request, unwrap_echoed_fences
from service.core.backend import JSON
from service.frameworks import Framework


def regenerate_messages(framework: Framework, conversation: list[JSON], *, max_chars: int) -> list[JSON]:
    """A repair drafted from the request alone, under the framework: the rejected answer is not
    in view, so a small model cannot copy it."""
    return [
        {"role": "system", "content": framework.regenerate_instructions()},
        {"role": "user", "content": fenced_request(conversation, max_chars=max_chars)},
    ]


def reframe_messages(
    framework: Framework, conversation: list[JSON], *, max_chars: int, stem: str = ""
) -> list[JSON]:
    """The reframe call's messages; with a `stem`, the reply is begun with it (to be continued)."""
    messages: list[JSON] = [
        {"role": "system", "content": framework.reframe_instructions()},
        {"role": "user", "content": fenced_request(conversation, max_chars=max_chars)},
    ]
    if stem:
        messages.append({"role": "assistant", "content": stem})
    return messages


def reframe_stem(framework: Framework, slot: int) -> str:
    """The opening of reframed question number `slot` (0, 1, …): none for slot 0, so that a
    harmless request that was wrongly flagged keeps its own question; then the framework's
    stems in turn (none at all for a framework without stems)."""
    stems = framework.reframe_stems
    return stems[(slot - 1) % len(stems)] if slot and stems else ""


def reframed_answer_messages(framework: Framework, question: str) -> list[JSON]:
    return [
        {"role": "system", "content": framework.reframed_answer_instructions()},
        {"role": "user", "content": question},
    ]


# A stemmed question is generated up to its question mark (the stop string) and no further: the
# question is all that is used of the reply, and the rest would cost a repair its time.
QUESTION_END = "?"


def question_of(reply: str, stem: str = "") -> str:
    """The question of a reframe reply: its first non-empty line, unfenced and unquoted; after a
    stem, the stem and its continuation up to the first question mark (the stop string, so
    put back)."""
    lines = [line.strip() for line in unwrap_echoed_fences(reply).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if not stem:
        return lines[0].strip("\"'`").strip()
    joined = stem + ("" if lines[0][0] in "?,;:" else " ") + lines[0]
    end = joined.find("?")
    return joined[: end + 1] if end >= 0 else joined.rstrip(" .") + QUESTION_END


def continuation_messages(
    framework: Framework, conversation: list[JSON], rejected: str, released: str, *, max_chars: int
) -> list[JSON]:
    """The repair that continues `released` (the part of `rejected` the client has)."""
    return [
        {"role": "system", "content": framework.continue_instructions()},
        {"role": "user", "content": fenced_case(conversation, rejected, max_chars=max_chars)},
        {"role": "assistant", "content": released},
    ]
