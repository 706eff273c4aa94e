"""Proxy overhead: added latency (p50, p99) and throughput, side by side in one run.

An instant loopback upstream (the tests' fake OpenAI server, in its own process) is called
directly and through the proxy (its own process) in modes off, monitor and enforce, each by
the same closed-loop load of `--concurrency` clients. Usage:

    .venv/bin/python bench/proxy_overhead.py --concurrency 32 --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = {"model": "policy", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_upstream(port: int) -> subprocess.Popen[bytes]:
    """The tests' fake OpenAI server in its own process: instant answers, no request history."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "--port", str(port), "--no-record"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_proxy(mode: str, upstream: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CONSCIENCE_UPSTREAM_URL": upstream,
        "CONSCIENCE_JUDGE_MODEL": "base-model",
        "CONSCIENCE_MODE": mode,
        "CONSCIENCE_PORT": str(port),
        "CONSCIENCE_LOG_LEVEL": "warning",
        "CONSCIENCE_DB_URL": f"sqlite+aiosqlite:///{workdir / f'{mode}.db'}",
        "CONSCIENCE_SPOOL_PATH": str(workdir / f"{mode}.spool"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    origin = f"http://127.0.0.1:{port}"
    wait_ready(f"{origin}/healthz")
    return process, f"{origin}/v1"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: unlike latency, barely moved by machine noise."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str
    latencies_ms: list[float]
    seconds: float
    cpu_s: float | None = None  # the proxy process's CPU time during the run

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds


async def load(name: str, base_url: str, concurrency: int, requests: int) -> Result:
    latencies: list[float] = []
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post("/chat/completions", json=BODY)
                response.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000.0)

        for _ in range(concurrency * 4):  # warm the connections and both processes
            await client.post("/chat/completions", json=BODY)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Result(name, latencies, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--modes", default="off,monitor,enforce")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds per target.")
    args = parser.parse_args()

    upstream_port = free_port()
    upstream_process = start_upstream(upstream_port)
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    wait_ready(f"{upstream}/models")
    proxies: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for mode in args.modes.split(","):
                proxies[mode] = start_proxy(mode, upstream, Path(tmp))
            targets = {"direct": (upstream, None)} | {
                f"proxy {mode}": (url, process.pid) for mode, (process, url) in proxies.items()
            }
            results: dict[str, list[Result]] = {name: [] for name in targets}
            for _ in range(args.rounds):  # interleave so machine noise hits every target alike
                for name, (url, pid) in targets.items():
                    before = cpu_seconds(pid) if pid else 0.0
                    result = asyncio.run(load(name, url, args.concurrency, args.requests))
                    if pid:
                        result.cpu_s = cpu_seconds(pid) - before
                    results[name].append(result)
        finally:
            for process, _ in proxies.values():
                process.terminate()
                process.wait(10)
            upstream_process.terminate()
    report(results, args)


def report(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    merged = {
        name: Result(
            name,
            [x for r in runs for x in r.latencies_ms],
            sum(r.seconds for r in runs),
            sum(r.cpu_s for r in runs) if runs[0].cpu_s is not None else None,
        )
        for name, runs in results.items()
    }
    direct = merged["direct"]
    off = merged.get("proxy off")
    print(f"\nproxy overhead: {args.concurrency} concurrent clients, {args.requests} requests x "
          f"{args.rounds} rounds per target, instant loopback upstream, {os.cpu_count()} cores\n")
    print(f"{'target':<16}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'+p50 ms':>10}{'+p99 ms':>10}"
          f"{'rps vs off':>12}{'proxy CPU ms/req':>18}")
    for name, result in merged.items():
        added50 = result.pct(0.5) - direct.pct(0.5)
        added99 = result.pct(0.99) - direct.pct(0.99)
        versus_off = f"{result.throughput / off.throughput:.2f}" if off and name != "direct" else "-"
        cpu = f"{1000 * result.cpu_s / len(result.latencies_ms):.3f}" if result.cpu_s is not None else "-"
        print(f"{name:<16}{result.pct(0.5):>9.2f}{result.pct(0.99):>9.2f}{result.throughput:>9.0f}"
              f"{added50 if name != 'direct' else 0:>10.2f}{added99 if name != 'direct' else 0:>10.2f}"
              f"{versus_off:>12}{cpu:>18}")
    spread = statistics.pstdev([r.throughput for r in results["direct"]])
    print(f"\ndirect throughput spread across rounds: ±{spread:.0f} req/s (machine noise)")


if __name__ == "__main__":
    main()
