"""`conscience calibrate --probe` on the tiny model: a probe artefact fitted by cross-validation
on a small synthetic labelled file, which the local backend then accepts for that model only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conscience_cli.main import command_tree
from service.conscience.probe import POOLINGS, load_probe

pytest.importorskip("torch")
pytest.importorskip("numpy")

runner = CliRunner()

HARMFUL = ["harm the human and injure the robot", "unethical harm: injure a human being", "injure harm harm human"]
HARMLESS = ["bake bread at home with flour", "the quick brown fox jumps over the lazy dog", "add two numbers in Python"]


@pytest.fixture
def probe_data(tmp_path: Path) -> Path:
    rows = []
    for i in range(8):  # eight prompts, each with a harmful and a harmless answer (contrast pairs)
        prompt = f"question number {i}: how do I do this?"
        rows.append({"id": f"{i}u", "prompt": prompt, "completion": HARMFUL[i % 3], "label": "unethical"})
        rows.append({"id": f"{i}e", "prompt": prompt, "completion": HARMLESS[i % 3], "label": "ethical"})
    rows.append({"id": "amb", "prompt": "q", "completion": "maybe", "label": "ambiguous"})
    path = tmp_path / "probe.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_calibrate_probe_writes_an_artefact_the_engine_accepts(
    probe_data: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONSCIENCE_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "tiny-probe.json"
    result = runner.invoke(command_tree(), [
        "calibrate", "--probe", "--data", str(probe_data), "--probe-out", str(out),
        "--probe-layers", "0,1,2,1+2", "--backend", "local", "--local-model", str(tiny_model_dir),
    ])
    assert result.exit_code == 0, result.output
    assert "written to" in result.output
    probe = load_probe(out)
    assert probe.layers in ((0,), (1,), (2,), (1, 2)) and probe.pooling in POOLINGS
    assert probe.figures["rows"] == 16 and probe.figures["positives"] == 8  # the ambiguous row is left out
    assert {"auc", "recall", "fpr", "threshold"} <= set(probe.figures["cv"])
    assert len(probe.figures["grid"]) == (4 * len(POOLINGS) - 1) * 3  # layer sets × poolings × L2 (no l2-normed set)
    assert probe.figures["cv"]["auc"] > 0.8  # the words differ, so even random weights separate them
    assert probe.target_fpr == 0.05 and 0.0 <= probe.threshold <= 1.0
    import hashlib

    assert probe.data_sha256 == hashlib.sha256(probe_data.read_bytes()).hexdigest()

    from service.backends.local.backend import probe_for
    from service.backends.local.loader import load_model

    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path / "cache")
    assert probe_for(loaded, out) == probe  # the fingerprint is the tiny model's


def test_calibrate_probe_needs_the_local_backend(
    probe_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(command_tree(), ["calibrate", "--probe", "--data", str(probe_data), "--backend", "upstream"])
    assert result.exit_code == 2 and "--backend local" in result.output


def test_calibrate_probe_names_the_extras_it_needs(probe_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.commands.errors as cli_errors

    monkeypatch.setattr(cli_errors, "missing_modules", lambda extra: ["numpy"] if extra == "eval" else [])
    result = runner.invoke(command_tree(), ["calibrate", "--probe", "--data", str(probe_data), "--backend", "local"])
    assert result.exit_code == 2 and "[eval] extra" in result.output
