"""Proxy overhead: added latency (p50, p99) and throughput, side by side in one run.

An instant loopback upstream (the tests' fake OpenAI server, in its own process) is called
directly and through the proxy (its own process) in modes off, monitor and enforce, each by
the same closed-loop load of `--concurrency` clients. Usage:

    .venv/bin/python bench/proxy_overhead.py --concurrency 32 --seconds 10   # needs wrk (apt-get install wrk)
    .venv/bin/python bench/proxy_overhead.py --concurrency 8 --workers 1,2 --modes off
    .venv/bin/python bench/proxy_overhead.py --concurrency 8 --workers 1,2 --modes off --upstream-delay-ms 5
    .venv/bin/python bench/proxy_overhead.py --concurrency 8 --workers 1,2 --modes off --rounds 3 --granian

`--workers 1,2` runs each mode as `serve --workers 1` and `--workers 2` ("proxy off x2"); the
"% direct" column is its throughput against the upstream alone; "wrk CPU ms/req" is what the
load generator itself costs (its CPU time per request, on the same cores as the servers) and
"upstream CPU ms/req" what the fake upstream does. `--baseline DIR` runs the proxy of another
checkout (`git worktree add DIR COMMIT`) beside this one's, in the same rounds ("base off").
`--granian` runs the same app under granian beside uvicorn (the choice of `serve --workers`'
server was made by this measurement). `--upstream-delay-ms` makes the upstream wait that long
before each answer, as a model server's short completion does: then the clients wait on the
upstream, not on the proxy's CPU, and "% direct" says what the proxy costs in a deployment's
terms. Results: bench/results/proxy_overhead/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.processes import free_port, start_fake_upstream, wait_until_up  # noqa: E402

BODY = {"model": "policy", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}


def proxy_environment(mode: str, upstream: str, workdir: Path, name: str, port: int, workers: int) -> dict[str, str]:
    return {
        **os.environ,
        "CONSCIENCE_UPSTREAM_URL": upstream,
        "CONSCIENCE_JUDGE_MODEL": "base-model",
        "CONSCIENCE_MODE": mode,
        "CONSCIENCE_PORT": str(port),
        "CONSCIENCE_LOG_LEVEL": "warning",
        "CONSCIENCE_DB_URL": f"sqlite+aiosqlite:///{workdir / f'{name}.db'}",
        "CONSCIENCE_SPOOL_PATH": str(workdir / f"{name}.spool"),
        "CONSCIENCE_WORKERS": str(workers),
    }


def start_proxy(
    mode: str, upstream: str, workdir: Path, workers: int = 1, root: Path = ROOT, tag: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    """`conscience serve` from the checkout at `root` (this one, or `--baseline`'s)."""
    port = free_port()
    env = proxy_environment(mode, upstream, workdir, f"{tag}{mode}-{workers}", port, workers)
    command = "conscience_cli" if (root / "conscience_cli").is_dir() else "service.cli"  # older commits
    process = subprocess.Popen(
        [sys.executable, "-m", command, "serve"], env=env, cwd=root,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    origin = f"http://127.0.0.1:{port}"
    wait_until_up(f"{origin}/healthz")
    return process, f"{origin}/v1"


def start_granian(mode: str, upstream: str, workdir: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """The same app under granian (`pip install granian`) with `workers` processes: each builds
    it with `serve --workers`' own factory (service/workers.py) from the same settings."""
    from service.settings import Settings
    from service.workers import APP_FACTORY, SETTINGS_VARIABLE, export_settings

    port = free_port()
    env = proxy_environment(mode, upstream, workdir, f"granian-{mode}-{workers}", port, workers)
    subprocess.run([sys.executable, "-m", "conscience_cli", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    saved = dict(os.environ)
    try:  # export_settings writes the variable the workers read; the servers' settings come from env
        os.environ.update(env)
        export_settings(Settings())
        env[SETTINGS_VARIABLE] = os.environ[SETTINGS_VARIABLE]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    granian = Path(sys.executable).with_name("granian")
    process = subprocess.Popen(
        [str(granian), "--interface", "asgi", "--factory", "--workers", str(workers), "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log", APP_FACTORY],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    origin = f"http://127.0.0.1:{port}"
    wait_until_up(f"{origin}/healthz")
    return process, f"{origin}/v1"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (the workers): unlike
    latency, barely moved by machine noise."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own + sum(cpu_seconds(int(child)) for child in children)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Result:
    name: str
    p50_ms: float
    p99_ms: float
    requests: int
    seconds: float
    cpu_s: float | None = None  # the proxy process's CPU time during the run
    load_cpu_s: float = 0.0  # wrk's own CPU time
    upstream_cpu_s: float = 0.0  # the fake upstream's CPU time during the run

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = [[{json.dumps(BODY)}]]
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS_MS[unit]


def load(name: str, base_url: str, concurrency: int, seconds: int, script: Path) -> Result:
    """wrk as the load generator: written in C, it leaves the cores to the servers measured."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "--latency", "-s", str(script),
               f"{base_url}/chat/completions"]
    before = children_cpu_seconds()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    load_cpu_s = children_cpu_seconds() - before
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{name}: failed requests under load:\n{out}")
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return Result(name, p50, p99, requests, float(seconds), load_cpu_s=load_cpu_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10, help="Duration of each wrk run.")
    parser.add_argument("--modes", default="off,monitor,enforce")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds per target.")
    parser.add_argument("--workers", default="1", help="Worker counts to run each mode with, e.g. 1,2.")
    parser.add_argument("--baseline", type=Path, help="Another checkout (git worktree add DIR COMMIT) "
                        "whose proxy runs beside this one's in the same rounds, as 'base ...'.")
    parser.add_argument("--upstream-delay-ms", type=float, default=0.0,
                        help="The upstream's latency per answer (0: instant).")
    parser.add_argument("--granian", action="store_true", help="Also run each mode and worker count "
                        "under granian ('granian off x2'; pip install granian), beside uvicorn's serve.")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/proxy_overhead.py needs wrk as its load generator: apt-get install wrk")
    if args.granian and not Path(sys.executable).with_name("granian").exists():
        sys.exit("--granian needs granian in this environment: pip install granian")

    upstream_port = free_port()
    upstream_process = start_fake_upstream(upstream_port, args.upstream_delay_ms)
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    wait_until_up(f"{upstream}/models")
    proxies: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        try:
            for mode in args.modes.split(","):
                for workers in (int(w) for w in args.workers.split(",")):
                    suffix = f" {mode}" + (f" x{workers}" if workers > 1 else "")
                    if args.baseline:
                        proxies["base" + suffix] = start_proxy(
                            mode, upstream, Path(tmp), workers, args.baseline.resolve(), "base-"
                        )
                    proxies["proxy" + suffix] = start_proxy(mode, upstream, Path(tmp), workers)
                    if args.granian:
                        proxies["granian" + suffix] = start_granian(mode, upstream, Path(tmp), workers)
            targets = {"direct": (upstream, None)} | {
                name: (url, process.pid) for name, (process, url) in proxies.items()
            }
            results: dict[str, list[Result]] = {name: [] for name in targets}
            for _ in range(args.rounds):  # interleave so machine noise hits every target alike
                for name, (url, pid) in targets.items():
                    before = cpu_seconds(pid) if pid else 0.0
                    upstream_before = cpu_seconds(upstream_process.pid)
                    result = load(name, url, args.concurrency, args.seconds, script)
                    result.upstream_cpu_s = cpu_seconds(upstream_process.pid) - upstream_before
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
    merged = {name: _merge(runs) for name, runs in results.items()}
    direct = merged["direct"]
    off = merged.get("proxy off")
    upstream = f"{args.upstream_delay_ms:g} ms" if args.upstream_delay_ms else "instant"
    print(f"\nproxy overhead: wrk, {args.concurrency} connections, {args.rounds} rounds x "
          f"{args.seconds} s per target (interleaved), {upstream} loopback upstream, {os.cpu_count()} cores\n")
    print(f"{'target':<16}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'% direct':>10}{'+p50 ms':>10}{'+p99 ms':>10}"
          f"{'rps vs off':>12}{'proxy CPU ms/req':>18}{'upstream CPU ms/req':>21}{'wrk CPU ms/req':>16}")
    for name, result in merged.items():
        proxied = name != "direct"
        added50 = result.p50_ms - direct.p50_ms if proxied else 0.0
        added99 = result.p99_ms - direct.p99_ms if proxied else 0.0
        versus_off = f"{result.throughput / off.throughput:.2f}" if off and proxied else "-"
        cpu = f"{1000 * result.cpu_s / result.requests:.3f}" if result.cpu_s is not None else "-"
        share = f"{100 * result.throughput / direct.throughput:.0f}%"
        wrk_cpu = 1000 * result.load_cpu_s / max(result.requests, 1)
        upstream_cpu = 1000 * result.upstream_cpu_s / max(result.requests, 1)
        print(f"{name:<16}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}{result.throughput:>9.0f}{share:>10}"
              f"{added50:>10.2f}{added99:>10.2f}{versus_off:>12}{cpu:>18}{upstream_cpu:>21.3f}{wrk_cpu:>16.3f}")
    spread = statistics.pstdev([r.throughput for r in results["direct"]])
    print(f"\ndirect throughput spread across rounds: ±{spread:.0f} req/s (machine noise)")


def _merge(runs: list[Result]) -> Result:
    """Latency percentiles as the median over rounds; counts and CPU time summed."""
    return Result(
        runs[0].name,
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.requests for r in runs),
        sum(r.seconds for r in runs),
        sum(r.cpu_s for r in runs) if runs[0].cpu_s is not None else None,
        sum(r.load_cpu_s for r in runs),
        sum(r.upstream_cpu_s for r in runs),
    )


if __name__ == "__main__":
    main()
