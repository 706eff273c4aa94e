"""Where settings come from besides flags and `CONSCIENCE_<GROUP>__<NAME>` variables.

Precedence, highest first (`Settings.settings_customise_sources`): flags and keyword arguments,
`CONSCIENCE_<GROUP>__<NAME>` variables, the same in `.env`, the pre-grouping variables
(`CONSCIENCE_<FLAT_NAME>`, deprecated), secret files (`CONSCIENCE_<GROUP>__<NAME>_FILE`), the
`--config` file, the defaults. A new name wins over an old one wherever both are set.

- `nest(values, flat_names)`: flat names (`stream_window_chars`, the flags' and the old
  keyword arguments') as `{"conscience": {"stream_window_chars": ...}}`; nested values pass.
- `LegacyVariables`: the pre-grouping variables, for one release; `deprecated_names` lists those
  in use, one line each naming the new name, for `serve` to log once at start-up.
- `SecretFiles`: a secret from the file `<variable>_FILE` names (Docker and Kubernetes secrets),
  so that a secret is never a flag (`ps` shows flags to everyone).
- `ConfigFile`: a TOML or YAML file, one table per group (`[limits]`, `max_n = 8`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from dotenv import dotenv_values
from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

PREFIX = "CONSCIENCE_"
CONFIG_VARIABLE = "CONSCIENCE_CONFIG"


class SettingsSourceError(ValueError):
    """A source the user named that cannot be used: a `--config` file that cannot be read or
    names a setting that does not exist, a secret file that cannot be read."""


def variable(path: str) -> str:
    """`judge.style` -> CONSCIENCE_JUDGE__STYLE."""
    return PREFIX + path.replace(".", "__").upper()


def legacy_variable(flat_name: str) -> str:
    """`judge_style` -> CONSCIENCE_JUDGE_STYLE (before the settings were grouped)."""
    return PREFIX + flat_name.upper()


def nest(values: Mapping[str, Any], flat_names: Mapping[str, str]) -> dict[str, Any]:
    """`values` with each flat name moved to its group: {"max_n": 4} -> {"limits": {"max_n": 4}}.
    Group tables and other keys stay; a flat value wins over the same setting in a group table."""
    by_flat = {flat: path for path, flat in flat_names.items()}
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if key in by_flat:
            continue
        nested[key] = dict(value) if isinstance(value, Mapping) else value
    for key, value in values.items():
        if key in by_flat:
            group, name = by_flat[key].split(".", 1)
            table = nested.setdefault(group, {})
            if isinstance(table, dict):
                table[name] = value
    return nested


def flat_names_given(values: Mapping[str, Any], flat_names: Mapping[str, str]) -> list[str]:
    """The flat names among `values`' keys."""
    known = set(flat_names.values())
    return [key for key in values if key in known]


def environment_with_dotenv(env_file: Any) -> dict[str, str]:
    """The process environment over the `.env` file(s) the settings read, upper-cased names."""
    values: dict[str, str] = {}
    files = [env_file] if isinstance(env_file, str | os.PathLike) else list(env_file or ())
    for file in files:
        if Path(file).expanduser().is_file():
            values.update({k.upper(): v for k, v in dotenv_values(file).items() if v is not None})
    values.update({k.upper(): v for k, v in os.environ.items()})
    return values


class _DictSource(PydanticBaseSettingsSource):
    """A source that computes its whole dictionary at once (`values`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ answers for all fields

    def values(self) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self) -> dict[str, Any]:
        return self.values()


class LegacyVariables(_DictSource):
    """`CONSCIENCE_<FLAT_NAME>` (environment or `.env`) for each setting, nested in its group."""

    def __init__(self, settings_cls: type[BaseSettings], dotenv: PydanticBaseSettingsSource | None) -> None:
        super().__init__(settings_cls)
        self._dotenv = dotenv

    def values(self) -> dict[str, Any]:
        environment = environment_with_dotenv(getattr(self._dotenv, "env_file", None))
        flat_names: Mapping[str, str] = self.settings_cls.flat_names  # type: ignore[attr-defined]
        given = {
            flat: environment[legacy_variable(flat)]
            for flat in flat_names.values() if legacy_variable(flat) in environment
        }
        return nest(given, flat_names)


class SecretFiles(_DictSource):
    """Each secret from the file `CONSCIENCE_<GROUP>__<NAME>_FILE` (or, deprecated,
    `CONSCIENCE_<FLAT_NAME>_FILE`) names, unless the variable itself is set."""

    def values(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        flat_names: Mapping[str, str] = self.settings_cls.flat_names  # type: ignore[attr-defined]
        for path in self.settings_cls.secret_paths():  # type: ignore[attr-defined]
            if variable(path) in os.environ or legacy_variable(flat_names[path]) in os.environ:
                continue  # the variable itself wins
            for name in (variable(path), legacy_variable(flat_names[path])):
                secret = secret_file(name)
                if secret is not None:
                    group, field = path.split(".", 1)
                    found.setdefault(group, {})[field] = secret
                    break
        return found


class ConfigFile(_DictSource):
    """The settings file: TOML (`.toml`) or YAML (`.yaml`, `.yml`), one table per group."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._path = path

    def values(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        values = read_config_file(self._path)
        groups = set(self.settings_cls.model_fields) - {"config"}
        flat_names: Mapping[str, str] = self.settings_cls.flat_names  # type: ignore[attr-defined]
        for key, value in values.items():
            if key not in groups:
                hint = _hint(key, flat_names)
                raise SettingsSourceError(
                    f"{self._path}: {key!r} is not a settings group ({', '.join(sorted(groups))}){hint}"
                )
            if not isinstance(value, dict):
                raise SettingsSourceError(f"{self._path}: {key!r} must be a table of settings ([{key}] name = value)")
        return values


def _hint(key: str, flat_names: Mapping[str, str]) -> str:
    by_flat = {flat: path for path, flat in flat_names.items()}
    if key in by_flat:
        group, name = by_flat[key].split(".", 1)
        return f"; {key} is `{name}` in [{group}]"
    return ""


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's tables; SettingsSourceError says why it cannot be read."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsSourceError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            values = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            values = tomllib.loads(text)
        else:
            raise SettingsSourceError(f"{path}: a settings file is .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise SettingsSourceError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(values, dict):
        raise SettingsSourceError(f"{path}: expected tables of settings, one per group")
    return values


def config_path(init_kwargs: Mapping[str, Any]) -> Path | None:
    """The `--config` flag (keyword `config`), else CONSCIENCE_CONFIG."""
    given = init_kwargs.get("config") or os.environ.get(CONFIG_VARIABLE)
    return Path(given) if given else None


def secret_file(name: str) -> str | None:
    """The secret in the file `<name>_FILE` names (Docker and Kubernetes secrets), if set."""
    path = os.environ.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsSourceError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None


def deprecated_names(
    flat_names: Mapping[str, str], secret_paths: tuple[str, ...], env_file: Any = ".env"
) -> Iterator[str]:
    """One line per pre-grouping variable set (environment or `.env`), naming its new name."""
    environment = environment_with_dotenv(env_file)
    for path, flat in flat_names.items():
        suffixes = ("", "_FILE") if path in secret_paths else ("",)
        for suffix in suffixes:
            if legacy_variable(flat) + suffix in environment:
                yield (
                    f"{legacy_variable(flat)}{suffix} is deprecated and will be removed in the next "
                    f"release: set {variable(path)}{suffix} instead"
                )

