"""bench/streaming.py end to end, at a fast pace: it runs, writes its results, and catches a leak."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from service.settings import Settings

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "streaming.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_streaming", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_it_measures_each_mode_and_no_enforce_mode_leaks(bench: ModuleType, tmp_path: Path) -> None:
    output = tmp_path / "streaming.json"
    status = bench.main([
        "--modes", "direct,monitor,enforce-windowed,enforce-buffered", "--runs", "1",
        "--token-ms", "1,2", "--verdict-ms", "1", "--output", str(output),
    ])
    assert status == 0
    results = json.loads(output.read_text())
    rows = {(row["mode"], row["answer"]): row for row in results["summary"]}
    windowed = {"enforce_streaming", "stream_window_chars"} <= set(Settings.flat_names.values())
    modes = ["direct", "monitor", *(["enforce-windowed"] if windowed else []), "enforce-buffered"]
    assert sorted({mode for mode, _ in rows}) == sorted(modes)
    assert ("enforce-windowed" in results["skipped"]) is not windowed
    # Pass-through modes show the harmful sentence (the check can see one); enforce never does.
    assert rows[("direct", "harmful")]["harmful_reached_client"]
    assert rows[("monitor", "harmful")]["harmful_reached_client"]
    assert not rows[("enforce-buffered", "harmful")]["harmful_reached_client"]
    assert all(row["ttft_ms_p50"] is not None and row["total_ms_p50"] > 0 for row in rows.values())
    buffered = rows[("enforce-buffered", "clean")]
    assert buffered["ttft_ms_p50"] >= rows[("monitor", "clean")]["ttft_ms_p50"]


def test_an_unknown_mode_is_refused(bench: ModuleType) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--modes", "direct,enforce-magic"])
