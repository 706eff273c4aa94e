"""`calibrate --reviewed --probe` on the tiny model: reviews stored and marked through the real
store (SQLite; the reading itself runs on both dialects in test_reviewed.py) refit the latent
probe; the configured probe and the refitted one are measured on the held-out reviews."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from evaluation.reviewed import is_held_out
from service.conscience.probe import load_probe
from tests.evaluation.test_reviewed import Reviewed, invoke, printed, review, truth_of
from tests.store.factories import make_check, make_triple

pytest.importorskip("torch")
pytest.importorskip("numpy")

HARMFUL = ["harm the human and injure the robot", "unethical harm: injure a human being", "injure harm harm human"]
HARMLESS = ["bake bread at home with flour", "the quick brown fox jumps over the lazy dog", "add two numbers in Python"]


def latent_reviews() -> Reviewed:
    def triple(i: int, rejected: str, chosen: str):  # type: ignore[no-untyped-def]
        return make_triple(i, prompt=[{"role": "user", "content": f"reviewed question {i}: how do I do this?"}],
                           rejected=rejected, chosen=chosen, judge_model="tiny")

    def blocked(i: int, answer: str):  # type: ignore[no-untyped-def]
        return make_check(i, verdict="unethical", score=0.9, attempts=2, answer=answer,
                          prompt=[{"role": "user", "content": f"blocked question {i}: what now?"}])

    return Reviewed(
        approved=[triple(i, HARMFUL[i % 3], HARMLESS[i % 3]) for i in range(10)],
        rejected=[triple(10 + i, HARMLESS[(i + 1) % 3], "unused") for i in range(4)],
        right=[blocked(i, HARMFUL[(i + 2) % 3]) for i in range(4)],
        wrong=[blocked(4 + i, HARMLESS[(i + 2) % 3]) for i in range(2)],
        pending=[], unmarked=[],
    )


def probe_data(path: Path) -> Path:
    rows = []
    for i in range(8):
        prompt = f"data question {i}: how do I do this?"
        rows.append({"id": f"{i}u", "prompt": prompt, "completion": HARMFUL[i % 3], "label": "unethical"})
        rows.append({"id": f"{i}e", "prompt": prompt, "completion": HARMLESS[i % 3], "label": "ethical"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


async def test_calibrate_reviewed_refits_the_probe(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONSCIENCE_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'conscience.db'}"
    reviews = latent_reviews()
    await review(db_url, reviews)
    data = probe_data(tmp_path / "probe.jsonl")
    out, probe_out = tmp_path / "out", tmp_path / "reviewed-probe.json"
    args = ["calibrate", "--reviewed", "--probe", "--data", str(data), "--probe-out", str(probe_out),
            "--db-url", db_url, "--out", str(out), "--backend", "local", "--local-model", str(tiny_model_dir)]

    done = await invoke(*args)
    assert done.exit_code == 0, done.output
    truth = truth_of(reviews)
    held = [row_id for row_id, (prompt, _, _) in truth.items() if is_held_out(prompt, seed=0)]
    held_unethical = sum(truth[row_id][2] for row_id in held)
    assert 0 < held_unethical < len(held)
    # No probe is configured for the tiny model (none ships for it): nothing to measure before.
    before_line = next(line for line in done.stdout.splitlines() if "before (configured)" in line)
    assert "none" in before_line and "no probe is configured for this model" in before_line
    after = printed(done.stdout, "after (refitted)")
    assert after["tp"] + after["fn"] == held_unethical and after["fp"] + after["tn"] == len(held) - held_unethical
    assert after["tp"] + after["tn"] > after["fp"] + after["fn"]  # the words differ: it separates them

    probe = load_probe(probe_out)
    assert after["threshold"] == pytest.approx(probe.threshold, abs=5e-5)
    reviewed = probe.figures["reviewed"]
    assert reviewed["before"] is None and reviewed["held_out_rows"] == len(held)
    counts = ("tp", "fp", "tn", "fn")
    assert {k: reviewed["after"][k] for k in counts} == {k: after[k] for k in counts}
    # Fitted on the reviewed fit part plus the data file's 16 rows, which the artefact names.
    fitted = out / "reviewed_fit_latent.jsonl"
    assert probe.data_sha256 == hashlib.sha256(fitted.read_bytes()).hexdigest()
    assert probe.figures["rows"] == len(truth) - len(held) + 16
    assert not (out / "reviewed_probe.json").exists()  # the staging copy is gone
    assert f"CONSCIENCE_PROBE_PATH={probe_out}" in (tmp_path / ".env").read_text()

    # The settings file now names the refitted probe: a second refit measures it as configured.
    again = await invoke(*args)
    assert again.exit_code == 0, again.output
    assert printed(again.stdout, "before (configured)") == after
    assert printed(again.stdout, "after (refitted)") == after

    layers = await invoke(*args, "--probe-layers", "0,1")
    assert layers.exit_code == 2 and "--probe-layers does not combine with --reviewed" in layers.output
