"""The container files, checked as far as a machine without a Docker engine can.

docker-compose.yaml is interpolated the way compose does it, then parsed by `compose-spec`
(typed bindings of the Compose Specification: unknown keys and bad values are errors); every
`conscience …` command it runs and every CONSCIENCE_* variable it sets must exist. The
Dockerfile must install from the lock, run as a numeric non-root user and keep its data in
volumes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import compose_spec
import pytest
import yaml

from service.settings import Settings, variable
from service.shutdown import SETTLE_S
from tests.cli_commands import problems

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yaml").read_text(encoding="utf-8")
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, environment: dict[str, str]) -> str:
    """Compose's interpolation; a required variable that is missing raises, as compose does."""

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match[1], match[2], match[3]
        given = environment.get(name)
        if operator and operator.endswith("?") and not given:
            raise KeyError(f"{name}: {argument}")
        if given is None or (given == "" and operator == ":-"):
            return argument if operator and operator.endswith("-") else ""
        return given

    # `$$` is a literal `$` in compose: keep it out of the variable pattern, then unescape.
    return "$".join(_VARIABLE.sub(value, part) for part in text.split("$$"))


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    text = interpolate(COMPOSE_TEXT, {"CONSCIENCE_SECURITY__ADMIN_KEY": "k" * 32})
    project = compose_spec.PyCompose.from_yaml(text)
    project.validate()
    assert set(project.service_names()) == {"postgres", "vllm", "proxy", "trainer"}


def test_compose_refuses_to_start_without_an_admin_key() -> None:
    with pytest.raises(KeyError, match="CONSCIENCE_SECURITY__ADMIN_KEY"):
        interpolate(COMPOSE_TEXT, {})


def test_the_interpolation_follows_compose() -> None:
    assert interpolate("${A:-x} ${B-y} ${C} $$HOME", {"B": ""}) == "x   $HOME"


def _services() -> dict:
    return yaml.safe_load(interpolate(COMPOSE_TEXT, {"CONSCIENCE_SECURITY__ADMIN_KEY": "k" * 32}))["services"]


def test_compose_gives_the_proxy_time_to_end_its_requests_and_write_their_records() -> None:
    """compose kills a container 10 s after SIGTERM unless told otherwise: the proxy's wait for
    requests in flight, their records settling and the writer's drain must fit, with a margin."""
    proxy = _services()["proxy"]
    grace = re.fullmatch(r"(\d+)s", proxy.get("stop_grace_period", "10s"))
    assert grace is not None, proxy.get("stop_grace_period")
    settings = Settings.from_flags(**{
        Settings.flat_names[path]: proxy["environment"][variable(path)]
        for path in ("serving.shutdown_grace_s", "store.writer_shutdown_timeout_s")
        if variable(path) in proxy["environment"]
    })
    needed = settings.serving.shutdown_grace_s + SETTLE_S + settings.store.writer_shutdown_timeout_s
    assert int(grace.group(1)) >= needed + 5


def _conscience_commands(script: str) -> list[list[str]]:
    joined = script.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if "conscience" in words:
            rest = words[words.index("conscience") + 1 :]
            commands.append([word for word in rest if not word.startswith("$")])
    return commands


def test_every_conscience_command_in_compose_exists() -> None:
    commands = []
    for service in _services().values():
        command = service.get("command")
        if isinstance(command, list) and command[:2] == ["sh", "-c"]:
            commands += _conscience_commands(command[2])
        elif isinstance(command, list) and command and command[0] == "conscience":
            commands.append(command[1:])
    assert commands, "the trainer runs `conscience train`"
    assert [problem for words in commands for problem in problems(words)] == []


def test_the_image_entrypoint_is_a_command_of_the_cli() -> None:
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", DOCKERFILE, flags=re.MULTILINE)
    assert entrypoint is not None
    words = yaml.safe_load(entrypoint[1])
    assert words[0] == "conscience" and problems(words[1:]) == []


def test_every_conscience_variable_in_compose_and_the_image_is_a_setting() -> None:
    known = Settings.variables()
    used = set(re.findall(r"\bCONSCIENCE_[A-Z_]+\b", COMPOSE_TEXT + DOCKERFILE))
    assert used - known == set()


def test_the_image_runs_as_a_numeric_non_root_user_from_the_lock_with_data_in_volumes() -> None:
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert user and re.fullmatch(r"[1-9]\d*(:\d+)?", user[-1]), user
    installs = re.findall(r"pip install[^\n&]*", DOCKERFILE)
    assert installs and all("--constraint requirements.lock" in line for line in installs)
    volumes = yaml.safe_load(re.search(r"^VOLUME (\[.*\])$", DOCKERFILE, flags=re.MULTILINE)[1])
    env = dict(re.findall(r"(CONSCIENCE_\w+)=(\S+)", DOCKERFILE))
    database = env["CONSCIENCE_STORE__DB_URL"].split(":///", 1)[1]
    assert any(database.startswith(volume + "/") for volume in volumes)
    assert any(env["CONSCIENCE_STORE__SPOOL_PATH"].startswith(volume + "/") for volume in volumes)


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", ".env", "*.db", "*.jsonl"} <= set(ignored)
