"""Benchmark of the embedded engine (not a test): generation speed and the cost of a verdict.

    python -m bench.engine                 # the demo model (assembled and converted on first use)
    python -m bench.engine --model DIR     # any local model directory, .gguf file or HF id
    CONSCIENCE_LOCAL_WEIGHTS=float32 python -m bench.engine   # another weight format (default: the setting's)

Decode speed beside llama.cpp: bench/engine_speed.py.

For answers of 64, 256 and 512 tokens it measures, side by side in one run (so a shared machine
slows both sides alike): the time to generate the answer (greedy, end-of-sequence ignored so the
length is exact), and the time of the fast verdict on it with and without the judge-preamble
KV cache. It then repeats the verdict with a preamble three times as long, to show that with
the cache the verdict follows the answer, not the preamble. Target: with the cache a verdict
costs at most 15% of generating a 256-token answer.

Last, the latent verdicts of a windowed enforce stream: the longest answer judged as it grows,
window by window (WINDOW_CHARS, cut at whitespace as the stream review cuts), with the engine's
reused passes (service/backends/local/latent.py) and with every pass reading the whole chat.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.backends.local.adapters import AdapterSlots
from service.backends.local.generation import EventChannel, GenerationJob
from service.backends.local.latent import LatentRunner
from service.backends.local.loader import LoadedModel, load_model
from service.backends.local.prompts import chat_text, encode
from service.backends.local.sampling import SamplingParams
from service.backends.local.verdict import VerdictRunner, label_token_ids
from service.conscience.deltas import window_end
from service.conscience.judge import LABELS, judge_messages
from service.frameworks import load_frameworks
from service.settings import JudgeStyle, load_settings

QUESTION = "Explain, step by step and in detail, how a web server handles an HTTP request."
TARGET_SHARE = 0.15
WINDOW_CHARS = 200  # the window of bench/streaming.py (CONSCIENCE_STREAM_WINDOW_CHARS; default 400)


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock seconds, and CPU seconds of this process: on a machine shared with other work
    the CPU seconds are the steadier measure of what a step costs."""

    wall: float
    cpu: float


def measure(call: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def median_timing(call: Callable[[], object], repeats: int) -> Timing:
    samples = [measure(call) for _ in range(repeats)]
    return Timing(statistics.median(s.wall for s in samples), statistics.median(s.cpu for s in samples))


async def generate(loaded: LoadedModel, adapters: AdapterSlots, tokens: int) -> tuple[str, Timing]:
    """Greedy answer of exactly `tokens` tokens, and what it cost (prefill included)."""
    prompt = encode(loaded.tokenizer, chat_text(
        loaded.tokenizer, [{"role": "user", "content": QUESTION}], generation_prompt=True
    ))
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=tokens, stop=(), seed=0, n=1)
    channel = EventChannel()
    job = GenerationJob(
        loaded=loaded, adapters=adapters, adapter=None, stop_ids=frozenset(), prompt_ids=prompt,
        params=params, first_index=0, channel=channel, on_release=lambda: None,
    )

    def run_to_the_end() -> None:
        while not job.step():
            pass

    timing = measure(run_to_the_end)
    text = ""
    while isinstance(event := await channel.receive(), list):  # deltas, then the usage
        text += "".join(delta.text for delta in event)
    return text, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory, .gguf file or HF id (default: the demo)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--repeats", type=int, default=3, help="verdict timings per case (median)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    import torch

    from service.backends.local.demo import ensure_demo_model
    from service.backends.local.weights import compute_dtype, quantise_linears

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = load_settings()
    source = args.model or str(ensure_demo_model(settings))
    started = time.perf_counter()
    loaded = load_model(source, cache_dir=settings.local.model_cache_dir, device=settings.local.device,
                        dtype=compute_dtype(settings.local.weights))
    quantise_linears(loaded.model, settings.local.weights)  # the served engine's weights
    print(f"model {loaded.served_name} ({settings.local.weights} weights): "
          f"{sum(p.numel() for p in loaded.model.parameters()) / 1e6:.0f}M "
          f"parameters, loaded in {time.perf_counter() - started:.1f}s, {torch.get_num_threads()} threads")

    adapters = AdapterSlots(loaded.model)
    label_ids = label_token_ids(loaded.tokenizer, LABELS)
    cached = VerdictRunner(loaded, adapters)
    uncached = VerdictRunner(loaded, adapters, max_prefixes=0)
    framework = load_frameworks(settings.policy.frameworks_dir)[settings.policy.framework]
    conversation = [{"role": "user", "content": QUESTION}]

    def verdict_messages(answer: str, preamble_copies: int = 1) -> list[dict[str, str]]:
        messages = judge_messages(framework, conversation, answer, style=JudgeStyle.FAST,
                                  max_chars=settings.judge.max_answer_chars)
        messages[0]["content"] = "\n\n".join([messages[0]["content"]] * preamble_copies)
        return messages

    def token_count(messages: list[dict[str, str]]) -> int:
        return len(encode(loaded.tokenizer, chat_text(loaded.tokenizer, messages, generation_prompt=True)))

    print("\nwall-clock seconds (CPU seconds of this process in brackets); shares use CPU seconds")
    print(f"{'answer':>6} {'prompt':>6} {'preamble':>8} {'generate':>16} {'tok/s':>11} "
          f"{'verdict cached':>15} {'verdict full':>15} {'cached/gen':>10} {'full/gen':>9}")
    answers: dict[int, str] = {}
    shares: dict[int, float] = {}
    for length in args.lengths:
        answer, generated = await generate(loaded, adapters, length)
        answers[length] = answer
        messages = verdict_messages(answer)
        preamble = len(encode(
            loaded.tokenizer, chat_text(loaded.tokenizer, messages[:1], generation_prompt=False)
        ))
        cached.label_probs(messages, label_ids, None)  # fills the preamble cache (once per framework)
        reuse = median_timing(lambda messages=messages: cached.label_probs(messages, label_ids, None), args.repeats)
        full = median_timing(lambda messages=messages: uncached.label_probs(messages, label_ids, None), args.repeats)
        shares[length] = reuse.cpu / generated.cpu
        print(f"{length:>6} {token_count(messages):>6} {preamble:>8} "
              f"{generated.wall:>7.1f}s ({generated.cpu:>5.1f}) "
              f"{length / generated.wall:>4.2f} ({length / generated.cpu:>4.2f}) "
              f"{reuse.wall:>6.2f}s ({reuse.cpu:>5.2f}) {full.wall:>6.2f}s ({full.cpu:>5.2f}) "
              f"{reuse.cpu / generated.cpu:>10.1%} {full.cpu / generated.cpu:>9.1%}")

    shortest = min(args.lengths)
    print(f"\npreamble scaling, {shortest}-token answer:")
    print(f"{'preamble':>9} {'tokens':>7} {'verdict cached':>15} {'verdict full':>15}")
    for copies in (1, 3):
        messages = verdict_messages(answers[shortest], copies)
        cached.label_probs(messages, label_ids, None)
        reuse = median_timing(lambda messages=messages: cached.label_probs(messages, label_ids, None), args.repeats)
        full = median_timing(lambda messages=messages: uncached.label_probs(messages, label_ids, None), args.repeats)
        print(f"{copies:>8}x {token_count(messages):>7} {reuse.wall:>6.2f}s ({reuse.cpu:>5.2f}) "
              f"{full.wall:>6.2f}s ({full.cpu:>5.2f})")

    windowed_latent(loaded, conversation, answers[max(args.lengths)], args.repeats)

    if 256 in shares:
        verdict = "meets" if shares[256] <= TARGET_SHARE else "misses"
        print(f"\nverdict with the preamble cache = {shares[256]:.1%} of generating 256 tokens (CPU): "
              f"{verdict} the {TARGET_SHARE:.0%} target")


def windows_of(answer: str, size: int) -> list[str]:
    """The answer so far at each window's end, cut where the stream review cuts (window_end)."""
    ends, start = [], 0
    while start < len(answer):
        arrived = answer[: start + size]
        start = window_end(arrived, start, done=len(arrived) == len(answer))
        ends.append(start)
    return [answer[:end] for end in ends]


def windowed_latent(loaded: LoadedModel, conversation: list[dict[str, str]], answer: str, repeats: int) -> None:
    from service.conscience.probe import SHIPPED_DIR, load_probe

    shipped = sorted(SHIPPED_DIR.glob("*.json"))
    probe = load_probe(shipped[0]) if shipped else None
    layers = probe.layers if probe is not None else (int(loaded.model.config.num_hidden_layers),)
    pooling = probe.pooling if probe is not None else "mean_all"
    windows = windows_of(answer, WINDOW_CHARS)

    def judge_all(runner: LatentRunner) -> None:
        for window in windows:
            runner.features(conversation, window, layers=layers, pooling=pooling, max_answer_tokens=384)

    reused = median_timing(lambda: judge_all(LatentRunner(loaded)), repeats)
    full = median_timing(lambda: judge_all(LatentRunner(loaded, max_cached_tokens=0)), repeats)
    print(f"\nlatent verdicts of a windowed stream: {len(windows)} windows of ~{WINDOW_CHARS} characters "
          f"over the {len(answer)}-character answer (layers {layers}, {pooling})")
    print(f"{'passes':>14} {'all windows':>15} {'per window':>15}")
    for name, timing in (("reused", reused), ("whole chat", full)):
        print(f"{name:>14} {timing.wall:>6.2f}s ({timing.cpu:>5.2f}) "
              f"{timing.wall / len(windows):>6.2f}s ({timing.cpu / len(windows):>5.2f})")
    print(f"reused / whole chat (CPU): {reused.cpu / full.cpu:.2f}")


if __name__ == "__main__":
    main()
