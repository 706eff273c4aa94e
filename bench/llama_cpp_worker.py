"""llama.cpp's side of bench/engine_speed.py (not a test): run by an interpreter that has
llama-cpp-python (a benchmark-only comparison, not a dependency), so it imports nothing of ours.

    /path/to/llama-venv/bin/python bench/llama_cpp_worker.py --gguf FILE --threads 2

Speaks JSON lines on stdin/stdout, as bench/engine_speed.py's torch workers do: it first says
{"ready": ..., "load_s": ...}; then for each {"prompt_ids": [...], "tokens": N} it reads the
prompt (prefill) and decodes exactly N tokens greedily (end of sequence ignored), one
Llama.eval per token as llama-cpp-python's server does, and answers
{"prefill_tps", "decode_tps", "tokens", "peak_rss_mb"}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--context", type=int, default=2048)
    args = parser.parse_args()

    import llama_cpp

    started = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=args.gguf, n_threads=args.threads, n_threads_batch=args.threads, n_ctx=args.context,
        n_batch=512, logits_all=False, verbose=False,
    )
    say({"ready": f"llama-cpp-python {llama_cpp.__version__}", "load_s": time.perf_counter() - started,
         "rss_mb": int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20})
    for line in sys.stdin:
        request = json.loads(line)
        prompt, count = request["prompt_ids"], request["tokens"]
        llm.reset()
        began = time.perf_counter()
        llm.eval(prompt)
        tokens = [greedy(llm)]
        prefilled = time.perf_counter()
        for _ in range(count - 1):
            llm.eval([tokens[-1]])
            tokens.append(greedy(llm))
        done = time.perf_counter()
        say({
            "prefill_tps": len(prompt) / (prefilled - began),
            "decode_tps": (count - 1) / (done - prefilled),
            "tokens": tokens,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        })


def greedy(llm: object) -> int:
    """The most likely next token: the last position's logits, read in place (llama-cpp-python
    keeps no copy of them unless every position's are kept)."""
    import llama_cpp
    import numpy

    logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # type: ignore[attr-defined]
    return int(numpy.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).argmax())  # type: ignore[attr-defined]


def say(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
