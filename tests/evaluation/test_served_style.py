"""Without --style, every `eval` command judges in the style the proxy would serve with the same
settings (service/conscience/policy.py `JudgeStyles.serving`): `latent` where the backend holds a probe and no
judge style is configured, the configured style where one is, `fast` otherwise; --style wins.

The probe is served the way the upstream backend serves one: an embeddings model on the fake
upstream and a probe file for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evaluation.cli import eval_app
from tests.api.test_latent_upstream import write_probe
from tests.evaluation.conftest import ROWS
from tests.fakes.upstream import FakeUpstream

runner = CliRunner()
SCORED = sum(label != "ambiguous" for label, _ in ROWS)


def flags(fake: FakeUpstream, tmp_path: Path, *, probe: bool) -> list[str]:
    base = ["--backend", "upstream", "--upstream-url", fake.url, "--judge-model", "base-model"]
    if not probe:
        return base
    write_probe(tmp_path / "probe.json", threshold=0.0)  # flags everything: repairs surely run
    return [*base, "--embeddings-model", "base-embed", "--probe-path", str(tmp_path / "probe.json")]


def embedding_calls(fake: FakeUpstream) -> int:
    return sum(request.path.endswith("/embeddings") for request in fake.requests)


def judge_report(fake: FakeUpstream, data_file: Path, tmp_path: Path, *extra: str, probe: bool) -> dict[str, Any]:
    out = tmp_path / "out"
    result = runner.invoke(eval_app, ["judge", "--data", str(data_file), "--out", str(out), "--framework", "wwjd",
                                      *extra, *flags(fake, tmp_path, probe=probe)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "judge.json").read_text())
    report["output"] = result.output
    return report


def judge_names(report: dict[str, Any]) -> list[str]:
    [file] = report["files"]
    return [entry["name"] for entry in file["results"]]


def test_eval_judge_defaults_to_the_latent_style_the_proxy_serves_with_a_probe(
    fake: FakeUpstream, data_file: Path, tmp_path: Path
) -> None:
    report = judge_report(fake, data_file, tmp_path, probe=True)
    assert judge_names(report) == ["latent", "baseline"]
    assert (report["meta"]["style"], report["meta"]["style_from"]) == ("latent", "served")
    assert embedding_calls(fake) == SCORED  # the probe judged every scored row
    assert "latent verdict (the style the proxy serves with these settings)" in report["output"]


def test_an_explicit_style_wins_over_the_served_one(fake: FakeUpstream, data_file: Path, tmp_path: Path) -> None:
    report = judge_report(fake, data_file, tmp_path, "--style", "fast", probe=True)
    assert judge_names(report) == ["wwjd", "baseline"]
    assert (report["meta"]["style"], report["meta"]["style_from"]) == ("fast", "--style")
    assert embedding_calls(fake) == 0


def test_a_configured_judge_style_is_what_the_proxy_serves_and_so_what_is_evaluated(
    fake: FakeUpstream, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSCIENCE_JUDGE_STYLE", "fast")  # set: the probe no longer decides
    report = judge_report(fake, data_file, tmp_path, probe=True)
    assert judge_names(report) == ["wwjd", "baseline"]
    assert (report["meta"]["style"], report["meta"]["style_from"]) == ("fast", "served")


def test_without_a_probe_the_served_style_is_fast(fake: FakeUpstream, data_file: Path, tmp_path: Path) -> None:
    report = judge_report(fake, data_file, tmp_path, probe=False)
    assert judge_names(report) == ["wwjd", "baseline"]
    assert report["meta"]["style"] == "fast"


def test_eval_repair_and_adversarial_default_to_the_served_style_too(
    fake: FakeUpstream, data_file: Path, tmp_path: Path
) -> None:
    served = flags(fake, tmp_path, probe=True)
    repair = runner.invoke(eval_app, ["repair", "--data", str(data_file), "--out", str(tmp_path / "repair"),
                                      "--framework", "wwjd", "--limit", "1", *served])
    assert repair.exit_code == 0, repair.output
    meta = json.loads((tmp_path / "repair" / "repair.json").read_text())["meta"]
    assert (meta["style"], meta["style_from"]) == ("latent", "served")
    assert "latent verdict (the style the proxy serves" in repair.output
    adversarial = runner.invoke(eval_app, ["adversarial", "--data", str(data_file), "--out", str(tmp_path / "adv"),
                                           "--framing", "dan", *served])
    assert adversarial.exit_code == 0, adversarial.output
    report = json.loads((tmp_path / "adv" / "adversarial.json").read_text())
    assert report["meta"]["styles"] == ["latent"]
    assert {entry["style"] for entry in report["results"]} == {"latent"}
