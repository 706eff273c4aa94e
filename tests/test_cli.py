"""The `conscience` command line: every command is mounted without torch, every `--help` works,
and every bad setting is one line naming it, with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conscience_cli import main as cli
from service.commands.errors import settings_or_exit
from tests.fakes.upstream import FakeUpstream

COMMANDS = [
    "serve", "openapi", "db", "keys", "triples", "blocked", "models", "train", "adapters", "finetune", "eval",
    "calibrate",
]
ROOT = Path(__file__).resolve().parent.parent


def _invoke(args: list[str], **env: str) -> tuple[int, str]:
    cli.command_tree()
    result = CliRunner().invoke(cli.app, args, env=env or None)
    return result.exit_code, result.output


def test_every_command_is_mounted_without_importing_torch() -> None:
    probe = (
        "import sys\n"
        "from conscience_cli import main as cli\n"
        "print(sorted(cli.command_tree().commands))\n"
        "print([m for m in ('torch', 'transformers', 'trl', 'peft', 'numpy') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    mounted, heavy = done.stdout.strip().splitlines()
    assert sorted(COMMANDS) == eval(mounted)
    assert heavy == "[]"


def _command_paths(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in getattr(group, "commands", {}).items():
        paths += _command_paths(command, (*prefix, name))
    return paths


@pytest.mark.parametrize("path", _command_paths(cli.command_tree()), ids=" ".join)
def test_every_help_exits_zero(path: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conscience_cli", *path, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_version() -> None:
    code, output = _invoke(["--version"])
    assert code == 0 and output.startswith("conscience ")


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--framework", "nope"], {}, ["--framework", "three_laws"]),
        (["--threshold", "2"], {}, ["--threshold", "less than or equal to 1"]),
        (["--db-url", "postgresql://conscience@db/conscience"], {}, ["--db-url", "postgresql+asyncpg"]),
        ([], {"CONSCIENCE_MODE": "strict"}, ["CONSCIENCE_MODE", "'enforce', 'monitor' or 'off'"]),
        ([], {"CONSCIENCE_MAX_REPAIRS": "-1"}, ["CONSCIENCE_MAX_REPAIRS", "greater than or equal to 0"]),
        (["--backend", "local", "--model", "/no/such/model.gguf"], {}, ["--model", "/no/such/model.gguf"]),
        (["--backend", "local", "--model", "a/b", "--local-model", "c/d"], {}, ["--model", "give one"]),
        ([], {"CONSCIENCE_ADMIN_KEY_FILE": "/no/such/secret"}, ["CONSCIENCE_ADMIN_KEY_FILE", "cannot read"]),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(args: list[str], env: dict[str, str], names: list[str]) -> None:
    code, output = _invoke(["serve", *args], **env)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert all(name in lines[0] for name in names), lines[0]


def test_a_bad_value_in_the_settings_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CONSCIENCE_JUDGE_STYLE=slow\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "conscience_cli", "serve"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --judge-style / CONSCIENCE_JUDGE_STYLE: Input should be 'fast', 'reasoned' or 'latent' (got 'slow')"
    ]


def test_an_unknown_enum_flag_is_a_usage_error() -> None:
    code, output = _invoke(["serve", "--mode", "strict"])
    assert code == 2 and "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["serve", "--admin-key", "a-secret-value-0123456789"], "CONSCIENCE_SECURITY__ADMIN_KEY"),
        (["serve", "--upstream-api-key=a-secret-value-0123456789"], "CONSCIENCE_UPSTREAM__API_KEY"),
        (["train", "--vllm-api-key", "a-secret-value-0123456789"], "CONSCIENCE_VLLM_API_KEY"),
        (["adapters", "activate", "conscience-v2", "--vllm-api-key=a-secret-value-0123456789"],
         "CONSCIENCE_VLLM_API_KEY"),
        (["adapters", "rollback", "--vllm-api-key", "a-secret-value-0123456789"], "CONSCIENCE_VLLM_API_KEY"),
    ],
)
def test_a_secret_given_as_a_flag_is_refused_in_one_line(args: list[str], variable: str) -> None:
    code, output = _invoke(args)
    flag = next(arg for arg in args if arg.startswith("--")).split("=")[0]
    assert code == 2, output
    assert output.strip().splitlines() == [
        f"error: {flag} is not accepted: a secret on the command line is shown to every user (ps); "
        f"set {variable}, or name a file holding it with {variable}_FILE"
    ]
    assert "a-secret-value" not in output


def test_a_secret_comes_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "admin_key"
    secret.write_text("k" * 24 + "\n", encoding="utf-8")
    os.environ["CONSCIENCE_ADMIN_KEY_FILE"] = str(secret)
    try:
        settings = settings_or_exit()
    finally:
        del os.environ["CONSCIENCE_ADMIN_KEY_FILE"]
    assert settings.security.admin_key is not None and settings.security.admin_key.get_secret_value() == "k" * 24


def test_a_model_the_upstream_does_not_serve_is_refused_at_start_up(tmp_path: Path) -> None:
    with FakeUpstream(base_model="base-model") as upstream:
        code, output = _invoke([
            "serve", "--upstream-url", upstream.url, "--model", "conscience-v9",
            "--db-url", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        ])
    assert code == 2, output
    assert output.strip().splitlines()[-1] == (
        "error: --model 'conscience-v9' is not served by the upstream; it serves: base-model"
    )


def test_local_model_flag_is_the_model_to_load() -> None:
    settings = settings_or_exit(backend="local", model="org/some-model")
    assert settings.local.model == "org/some-model" and settings.serving.model is None


@pytest.mark.parametrize(
    ("args", "code", "names"),
    [
        (["db", "upgrade", "--db-url", "postgresql://x@127.0.0.1/test"], 2, ["--db-url", "postgresql+asyncpg"]),
        (["db", "upgrade", "--db-url", "postgresql+asyncpg://x@127.0.0.1:1/test"], 1, ["database error"]),
        (["keys", "create", "--name", "a", "--framework", "nope"], 2, ["--framework", "wwjd"]),
    ],
)
def test_store_commands_fail_in_one_line(tmp_path: Path, args: list[str], code: int, names: list[str]) -> None:
    exit_code, output = _invoke(args, CONSCIENCE_DB_URL=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    assert exit_code == code, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and all(name in lines[0] for name in names), output


@pytest.mark.parametrize(
    ("exporter", "names"), [("zipkin", ["OTEL_TRACES_EXPORTER", "console or otlp"])],
)
def test_an_unknown_trace_exporter_is_one_line_and_exit_2(tmp_path: Path, exporter: str, names: list[str]) -> None:
    code, output = _invoke(
        ["serve", "--db-url", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"], OTEL_TRACES_EXPORTER=exporter
    )
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and all(name in lines[0] for name in names), output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unreachable_database_with_auto_migrate_is_one_line_and_exit_1(tmp_path: Path, workers: str) -> None:
    # Port 1 refuses connections: the migration fails before the proxy listens.
    unreachable = "postgresql+asyncpg://conscience:hunter2@127.0.0.1:1/conscience"
    done = subprocess.run(
        [sys.executable, "-m", "conscience_cli", "serve", "--auto-migrate", "--db-url", unreachable,
         "--workers", workers, "--port", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        "error: --auto-migrate: cannot migrate the database "
        "postgresql+asyncpg://conscience:***@127.0.0.1:1/conscience: "
    ), line
    assert "Connect call failed" in line, line
