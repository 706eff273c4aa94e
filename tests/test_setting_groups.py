"""Settings in groups (issue 27): nested variables, a `--config` file below variables and flags,
the pre-grouping names still read for one release with a deprecation line, a `serve --help`
that fits on one screen, and the rename script the lead reruns after merging a branch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conscience_cli import main as cli
from scripts.rename_settings import renamed
from service.settings import JudgeStyle, Mode, Settings, load_settings
from tests.processes import free_port, start_fake_upstream, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
SCREEN_OPTION_LINES = 40


@pytest.fixture(autouse=True)
def _no_conscience_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CONSCIENCE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout


def test_a_nested_variable_sets_its_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSCIENCE_JUDGE__STYLE", "reasoned")
    monkeypatch.setenv("CONSCIENCE_POLICY__STREAM_WINDOW_CHARS", "24")
    settings = Settings()
    assert settings.judge.style is JudgeStyle.REASONED and settings.policy.stream_window_chars == 24
    assert settings.deprecated_names() == []


def test_an_old_variable_still_works_and_names_its_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSCIENCE_STREAM_WINDOW_CHARS", "24")
    monkeypatch.setenv("CONSCIENCE_JUDGE_MODEL", "base-model")
    settings = Settings()
    assert settings.policy.stream_window_chars == 24 and settings.judge.model == "base-model"
    assert sorted(settings.deprecated_names()) == [
        "CONSCIENCE_JUDGE_MODEL is deprecated and will be removed in the next release: "
        "set CONSCIENCE_JUDGE__MODEL instead",
        "CONSCIENCE_STREAM_WINDOW_CHARS is deprecated and will be removed in the next release: "
        "set CONSCIENCE_POLICY__STREAM_WINDOW_CHARS instead",
    ]
    monkeypatch.setenv("CONSCIENCE_POLICY__STREAM_WINDOW_CHARS", "48")  # the new name wins
    assert Settings().policy.stream_window_chars == 48


def test_an_old_secret_file_variable_still_works(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k" * 24 + "\n", encoding="utf-8")
    monkeypatch.setenv("CONSCIENCE_ADMIN_KEY_FILE", str(tmp_path / "key"))
    settings = Settings()
    assert settings.security.admin_key is not None and settings.security.admin_key.get_secret_value() == "k" * 24
    assert [line.split()[0] for line in settings.deprecated_names()] == ["CONSCIENCE_ADMIN_KEY_FILE"]


def test_an_old_flat_keyword_is_accepted_with_a_deprecation_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = Settings(stream_window_chars=24, mode="monitor", _env_file=None)
    assert settings.policy.stream_window_chars == 24 and settings.policy.mode is Mode.MONITOR
    [warning] = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert "policy.stream_window_chars" in str(warning.message)


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_flags_beat_variables_beat_the_config_file_beats_the_defaults(
    suffix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / f"conscience{suffix}"
    if suffix == ".toml":
        config.write_text(
            '[serving]\nport = 1111\n[policy]\nmode = "monitor"\nstream_window_chars = 50\n'
            "[limits]\nmax_n = 4\n", encoding="utf-8",
        )
    else:
        config.write_text(
            "serving: {port: 1111}\npolicy: {mode: monitor, stream_window_chars: 50}\nlimits: {max_n: 4}\n",
            encoding="utf-8",
        )
    monkeypatch.setenv("CONSCIENCE_POLICY__MODE", "off")
    monkeypatch.setenv("CONSCIENCE_STREAM_WINDOW_CHARS", "60")  # an old name is a variable too
    settings = load_settings(config=str(config), port=2222)
    assert settings.serving.port == 2222  # the flag
    assert settings.policy.mode is Mode.OFF  # the variable
    assert settings.policy.stream_window_chars == 60  # the old variable
    assert settings.limits.max_n == 4  # the file
    assert settings.limits.max_body_bytes == 4 * 1024 * 1024  # the default
    monkeypatch.setenv("CONSCIENCE_CONFIG", str(config))  # the file by variable
    assert Settings().serving.port == 1111


def _serve(*args: str) -> tuple[int, str]:
    cli.command_tree()  # mounts the commands
    done = CliRunner().invoke(cli.app, ["serve", *args])
    return done.exit_code, done.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[limits]\nmax_n = 0\n", "error: --max-n / CONSCIENCE_LIMITS__MAX_N: Input should be greater than"),
        ("[limits]\nmax_m = 3\n", "error: limits.max_m: no such setting"),
        ("max_n = 3\n", "'max_n' is not a settings group"),
        ("[limits\n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(text: str, expected: str, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(text, encoding="utf-8")
    code, output = _serve("--config", str(tmp_path / "bad.toml"))
    assert code == 2, output
    [line] = output.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line


def test_a_misspelt_nested_variable_is_an_error_not_ignored(tmp_path: Path) -> None:
    # A process with a deadline: were the variable ignored, the server would start and serve.
    done = subprocess.run(
        [sys.executable, "-m", "conscience_cli", "serve", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CONSCIENCE_LIMITS__MAX_M": "3"},
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: limits.max_m: no such setting (docs/settings.md lists them)"


def test_serve_help_fits_on_one_screen_and_shows_the_operators_decisions() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conscience_cli", "serve", "--help"], capture_output=True, text=True, timeout=60,
        cwd=ROOT, env={**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    options = [line for line in lines if line.startswith("│")]
    assert len(options) <= SCREEN_OPTION_LINES, f"{len(options)} lines of options:\n{done.stdout}"
    shown = set(re.findall(r"(--[a-z-]+)", "\n".join(options)))
    assert {"--config", "--upstream-url", "--judge-model", "--mode", "--db-url", "--workers"} <= shown
    assert "--stream-window-chars" not in shown and "--writer-batch-size" not in shown


def test_a_hidden_flag_still_sets_its_setting() -> None:
    code, output = _serve("--max-n", "999")
    assert code == 2
    assert output.strip() == (
        "error: --max-n / CONSCIENCE_LIMITS__MAX_N: Input should be less than or equal to 128 (got 999)"
    )


def test_serve_logs_each_old_variable_once_and_reads_the_config_file(tmp_path: Path) -> None:
    """The real server: a config file's limit, overridden by an old variable (logged once at
    start-up with its new name), reaches the request path."""
    upstream_port, port = free_port(), free_port()
    upstream = start_fake_upstream(upstream_port)
    config = tmp_path / "conscience.toml"
    config.write_text('[limits]\nmax_n = 2\n[policy]\nmode = "monitor"\n', encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONSCIENCE_")},
        "PYTHONPATH": str(ROOT),
        "CONSCIENCE_UPSTREAM__URL": f"http://127.0.0.1:{upstream_port}/v1",
        "CONSCIENCE_JUDGE__MODEL": "base-model",
        "CONSCIENCE_STORE__DB_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "CONSCIENCE_STORE__SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        "CONSCIENCE_MAX_N": "3",
    }
    proxy = subprocess.Popen(
        [sys.executable, "-m", "conscience_cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{upstream_port}/v1/models")
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        body = {"model": "policy", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as client:
            assert client.post("/chat/completions", json={**body, "n": 3}).status_code == 200
            refused = client.post("/chat/completions", json={**body, "n": 4})
        assert refused.status_code == 400 and set(refused.json()["error"]) >= {"message", "type", "param", "code"}
    finally:
        proxy.terminate()
        _, stderr = proxy.communicate(timeout=30)
        upstream.terminate()
        upstream.wait(10)
    deprecations = [line for line in stderr.splitlines() if "deprecated" in line]
    assert len(deprecations) == 1 and "CONSCIENCE_MAX_N" in deprecations[0], stderr
    assert "set CONSCIENCE_LIMITS__MAX_N instead" in deprecations[0]


def test_the_rename_script_moves_flat_names_to_their_groups_once() -> None:
    code = (
        "settings.upstream_url; self._settings.stream_window_chars; request.app.state.settings.admin_key; "
        "settings.lets_clients_choose_framework(name); other.mode; settings.serving.model"
    )
    assert renamed(code) == (
        "settings.upstream.url; self._settings.policy.stream_window_chars; "
        "request.app.state.settings.security.admin_key; settings.policy.lets_clients_choose_framework(name); "
        "other.mode; settings.serving.model"
    )
    assert renamed(renamed(code)) == renamed(code)
    manifest = "CONSCIENCE_ADMIN_KEY_FILE CONSCIENCE_MODEL CONSCIENCE_MODEL_CACHE_DIR CONSCIENCE_THRESHOLD_X"
    assert renamed(manifest, variables=True) == (
        "CONSCIENCE_SECURITY__ADMIN_KEY_FILE CONSCIENCE_SERVING__MODEL CONSCIENCE_LOCAL__MODEL_CACHE_DIR "
        "CONSCIENCE_THRESHOLD_X"
    )


def test_every_setting_has_one_flat_name_and_one_line_of_help() -> None:
    paths = Settings.setting_fields()
    assert set(Settings.flat_names) == set(paths)
    assert len(set(Settings.flat_names.values())) == len(paths)
    assert all(info.description and "\n" not in info.description for info in paths.values())
