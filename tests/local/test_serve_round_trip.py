"""`conscience serve --backend local` end to end: the real CLI, the openai SDK, the tiny model.

A random model has no ethics, so the test first asks the same code in-process where its judge
scores a greedy answer above the greedy repair of it, and sets the threshold between the two:
the served proxy must then flag the answer, repair it, return the repair and log the triple.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from service.backends.local.backend import LocalBackend
from service.conscience.judge import Judge
from service.conscience.repair import Repairer
from service.conscience.similarity import is_near_copy
from service.frameworks import load_frameworks
from service.settings import Settings
from service.store.models import Triple
from tests.local.conftest import local_settings
from tests.processes import free_port

MAX_TOKENS = 12
CANDIDATES = ["Tell me a story.", "How do I bake bread?", "Help me with my homework.", "Hello robot.",
              "What is a law?", "Say something.", "Write Python code."]


async def _scores(backend: LocalBackend, question: str) -> tuple[float, float, str]:
    framework = load_frameworks()["three_laws"]
    messages = [{"role": "user", "content": question}]
    judge = Judge(backend, threshold=0.5, max_answer_chars=12000, reasoned_max_tokens=8)
    base = backend.served_base_name
    answer = (await backend.chat({"messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0}))[
        "choices"][0]["message"]["content"]
    # The proxy's repair: drafted from the request alone (one candidate, as served below).
    [draft] = await Repairer(
        backend, max_tokens=MAX_TOKENS, max_answer_chars=12000, temperature=0,
        frequency_penalty=Settings().repair_frequency_penalty,
    ).candidates(framework, messages, judge_model=base)
    repair = draft.text
    if is_near_copy(repair, answer, Settings().repair_max_overlap):
        repair = ""  # the proxy would discard it
    original = await judge.judge(framework, messages, answer, judge_model=base)
    repaired = await judge.judge(framework, messages, repair, judge_model=base)
    return original.score, repaired.score, repair


def _pick_case(model_dir: Path, cache_dir: Path) -> tuple[str, float, str]:
    backend = LocalBackend.from_settings(local_settings(model_dir, cache_dir))
    try:
        for question in CANDIDATES:
            flagged, passed, repair = asyncio.run(_scores(backend, question))
            if repair and flagged - passed > 2e-5:  # far above float noise, same threads
                return question, (flagged + passed) / 2, repair
    finally:
        asyncio.run(backend.aclose())
    raise AssertionError("no candidate question gives a repair the random judge prefers")


def test_serve_local_round_trip_with_a_triple(tiny_model_dir: Path, tmp_path: Path) -> None:
    question, threshold, repair = _pick_case(tiny_model_dir, tmp_path / "cache")
    port, db_file = free_port(), tmp_path / "conscience.db"
    command = [
        sys.executable, "-m", "conscience_cli", "serve", "--backend", "local",
        "--local-model", str(tiny_model_dir), "--port", str(port), "--threshold", str(threshold),
        "--repair-temperature", "0", "--repair-max-tokens", str(MAX_TOKENS), "--max-repairs", "1",
        "--repair-candidates", "1",
        "--repair-min-topic-similarity", "0",  # a random model's states have no topics to compare
        "--db-url", f"sqlite+aiosqlite:///{db_file}", "--spool-path", str(tmp_path / "spool.jsonl"),
        "--local-threads", "1", "--local-weights", "float32",  # the weights _pick_case scored with
    ]
    env = {**os.environ, "CONSCIENCE_MODEL_CACHE_DIR": str(tmp_path / "cache")}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "the local proxy did not become ready"
            time.sleep(0.25)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        [model] = [m.id for m in client.models.list().data]
        completion = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}],
            max_tokens=MAX_TOKENS, temperature=0,
        )
        assert completion.choices[0].message.content == repair
        conscience = completion.model_extra["conscience"]
        assert conscience["verdict"] == "unethical" and conscience["repaired"] is True
        assert conscience["judge_model"] == model
        engine = create_engine(f"sqlite:///{db_file}")
        deadline = time.monotonic() + 10
        while not (triples := list(Session(engine).scalars(select(Triple)))) and time.monotonic() < deadline:
            time.sleep(0.1)
        [triple] = triples
        assert triple.chosen == repair and triple.prompt == [{"role": "user", "content": question}]
    finally:
        server.terminate()
        server.wait(30)
