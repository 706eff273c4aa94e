"""Added latency of each integration path, beside the proxy path, against the same upstream, in
one run.

The tests' fake OpenAI server (its own process, `--upstream-delay-ms` before each answer) is the
model and the judge. One client asks `--requests` times, one request at a time, on each path:
- direct: the upstream alone;
- proxy: Conscience's /v1/chat/completions in mode enforce (judged before the answer);
- check / moderations: the upstream, then /v1/conscience/check (or /v1/moderations) on its
  answer — what a gateway that calls Conscience does;
- litellm, litellm + guardrail, litellm + moderation: a LiteLLM proxy (its own venv) without a
  guardrail, with ours (post_call) and with its openai_moderation guardrail on our endpoint;
- nemo, nemo + rail: NeMo Guardrails without rails and with our check rail (its own venv,
  timed in that process: bench/nemo_timing.py).
Every answer is harmless: what is measured is the judged pass, not a repair. "added ms" is the
p50 against direct (the LiteLLM and NeMo rows also against their own path without Conscience).
Usage: .venv/bin/python bench/integrations.py --requests 50 --upstream-delay-ms 20
Results: bench/results/integrations/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.proxy_overhead import start_proxy  # noqa: E402
from tests.integrations.venvs import integration_python  # noqa: E402
from tests.processes import free_port, start_fake_upstream, wait_until_up  # noqa: E402

ASK = [{"role": "user", "content": "Say hello."}]
CHAT = {"model": "policy", "messages": ASK, "max_tokens": 16}
MASTER_KEY = "sk-litellm-master-key-for-the-bench-0123456789"
RESULTS = ROOT / "bench" / "results" / "integrations"


def timed(call: Callable[[], None], requests: int) -> list[float]:
    call()  # warm: connections, caches
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def start_litellm(upstream: str, conscience: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    python = integration_python("litellm")
    shutil.copy(ROOT / "integrations" / "litellm" / "conscience_guardrail.py", workdir)
    config = {
        "model_list": [{"model_name": "policy", "litellm_params": {
            "model": "openai/policy", "api_base": upstream, "api_key": "unused"}}],
        "guardrails": [
            {"guardrail_name": "conscience", "litellm_params": {
                "guardrail": "conscience_guardrail.ConscienceGuardrail", "mode": "post_call",
                "default_on": False, "api_base": conscience}},
            {"guardrail_name": "conscience-moderation", "litellm_params": {
                "guardrail": "openai_moderation", "mode": "post_call", "default_on": False,
                "api_base": f"{conscience}/v1", "api_key": "unused"}},
        ],
        "litellm_settings": {"num_retries": 0, "telemetry": False},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": ""}
    process = subprocess.Popen(
        [str(python.parent / "litellm"), "--config", "config.yaml", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_until_up(f"http://127.0.0.1:{port}/health/liveliness", timeout_s=180)
    return process, f"http://127.0.0.1:{port}/v1"


def nemo_samples(upstream: str, conscience: str, workdir: Path, requests: int) -> dict[str, list[float]]:
    folder = workdir / "nemo"
    shutil.copytree(ROOT / "integrations" / "nemo" / "config", folder)
    config = (folder / "config.yml").read_text().replace("http://vllm:8000/v1", upstream)
    (folder / "config.yml").write_text(config.replace("conscience repair output", "conscience check output"))
    env = {**os.environ, "CONSCIENCE_API_BASE": conscience, "OPENAI_API_KEY": "unused", "PYTHONPATH": ""}
    done = subprocess.run(
        [str(integration_python("nemo")), str(ROOT / "bench" / "nemo_timing.py"), str(folder), str(requests)],
        capture_output=True, text=True, env=env, check=True, timeout=1800,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": statistics.median(ordered), "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--upstream-delay-ms", type=float, default=20.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-integrations-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        processes.append(start_fake_upstream(port, args.upstream_delay_ms))
        upstream = f"http://127.0.0.1:{port}/v1"
        wait_until_up(f"{upstream}/models")
        proxy, proxy_url = start_proxy("enforce", upstream, workdir)
        processes.append(proxy)
        conscience = proxy_url.removesuffix("/v1")
        litellm, litellm_url = start_litellm(upstream, conscience, workdir)
        processes.append(litellm)
        client = httpx.Client(timeout=60)

        def chat(url: str, **extra: object) -> dict:
            answer = client.post(f"{url}/chat/completions", json={**CHAT, **extra},
                                 headers={"Authorization": f"Bearer {MASTER_KEY}"})
            answer.raise_for_status()
            return answer.json()

        def then(path: str, body: Callable[[str], dict]) -> Callable[[], None]:
            def call() -> None:
                text = chat(upstream)["choices"][0]["message"]["content"]
                client.post(f"{conscience}{path}", json=body(text)).raise_for_status()
            return call

        paths: dict[str, Callable[[], None]] = {
            "direct": lambda: chat(upstream) and None,
            "proxy (enforce)": lambda: chat(proxy_url) and None,
            "upstream + /v1/conscience/check": then("/v1/conscience/check", lambda t: {"messages": ASK, "answer": t}),
            "upstream + /v1/moderations": then("/v1/moderations", lambda t: {"input": t}),
            "litellm": lambda: chat(litellm_url) and None,
            "litellm + our guardrail": lambda: chat(litellm_url, guardrails=["conscience"]) and None,
            "litellm + openai_moderation": lambda: chat(litellm_url, guardrails=["conscience-moderation"]) and None,
        }
        samples = {name: timed(call, args.requests) for name, call in paths.items()}
        samples.update(nemo_samples(upstream, conscience, workdir, args.requests))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    report(samples, args)


def report(samples: dict[str, list[float]], args: argparse.Namespace) -> None:
    rows = {name: summary(values) for name, values in samples.items()}
    base = {"litellm + our guardrail": "litellm", "litellm + openai_moderation": "litellm", "nemo + rail": "nemo"}
    direct = rows["direct"]["p50_ms"]
    lines = [
        f"Added latency, one client, {args.requests} requests per path, upstream delay "
        f"{args.upstream_delay_ms:g} ms (bench/integrations.py).", "",
        "| path | p50 ms | p99 ms | added vs direct (p50) | added vs its path without Conscience (p50) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        own = f"{row['p50_ms'] - rows[base[name]]['p50_ms']:+.1f}" if name in base else ""
        lines.append(f"| {name} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['p50_ms'] - direct:+.1f} | {own} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latency.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "latency.json").write_text(json.dumps({"args": vars(args), "paths": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
