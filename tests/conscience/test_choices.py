"""Every choice of a streamed answer through its enforcement, recorded by the pipeline on every
way the stream ends (service/conscience/choices.py): its end, an upstream failure of any kind,
the client leaving. The HTTP edge only frames the released text; it writes no record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.conscience.outcome import CLIENT_DISCONNECTED
from service.settings import Mode
from service.store.records import CheckRecord
from tests.conscience.test_pipeline import ASK, ListSink, MarkerJudge, context, pipeline


async def words(*pieces: str, fail: Exception | None = None, pause: asyncio.Event | None = None) -> AsyncIterator[str]:
    for piece in pieces:
        yield piece
    if pause is not None:
        await pause.wait()
    if fail is not None:
        raise fail


async def nothing_to_close() -> None:
    return None


def checks(sink: ListSink) -> list[CheckRecord]:
    return [record for record in sink.records if isinstance(record, CheckRecord)]


def streamed(  # type: ignore[no-untyped-def]
    sink: ListSink, *deltas: AsyncIterator[str], window_chars: int | None = 8, close_upstream=nothing_to_close
):
    return pipeline(MarkerJudge(), sink, "a kind answer").stream_choices(
        context(Mode.ENFORCE), [ASK] * len(deltas), list(deltas), window_chars=window_chars,
        close_upstream=close_upstream, upstream_ms=lambda: 7.0,
    )


async def test_each_choice_is_released_and_recorded_when_the_stream_ends() -> None:
    sink = ListSink()
    choices = streamed(sink, words("fine words ", "and more"), words("a bad answer"))
    released = [(index, text) async for index, text in choices]
    assert "".join(text for index, text in released if index == 0) == "fine words and more"
    assert [(c.choice_index, c.verdict, c.upstream_ms) for c in checks(sink)] == [
        (0, "ethical", 7.0), (1, "unethical", 7.0)
    ]


async def test_an_unbounded_window_is_the_buffered_review() -> None:
    sink = ListSink()
    choices = streamed(sink, words("a bad ", "answer"), window_chars=None)
    assert [text async for _, text in choices] == ["a kind answer"]  # one release, the repair
    [check] = checks(sink)
    assert check.repaired and check.attempts == 1


async def test_an_upstream_failure_of_any_kind_is_recorded_before_it_is_raised() -> None:
    sink = ListSink()
    choices = streamed(sink, words("fine words ", fail=RuntimeError("connection reset")))
    with pytest.raises(RuntimeError):
        async for _ in choices:
            pass
    [check] = checks(sink)
    assert check.error is not None and "connection reset" in check.error


async def test_a_client_leaving_is_recorded_in_the_background() -> None:
    sink = ListSink()
    pause = asyncio.Event()

    async def close_upstream() -> None:  # as the tap's close: the choice's deltas end
        pause.set()

    choices = streamed(sink, words("fine words ", "more words ", pause=pause), close_upstream=close_upstream)
    stream = aiter(choices)
    await anext(stream)
    await stream.aclose()  # the client has gone; its upstream is closed, what was read judged
    for _ in range(50):
        if checks(sink):
            break
        await asyncio.sleep(0.01)
    [check] = checks(sink)
    assert check.error == CLIENT_DISCONNECTED
