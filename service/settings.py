"""Every runtime setting of the proxy, in one place, grouped by concern.

`Settings` nests one model per group (service/setting_groups.py): `settings.judge.style`. Each
setting is a variable `CONSCIENCE_<GROUP>__<NAME>`, a key of its `[group]` table in a `--config`
file (TOML or YAML), and a `conscience serve` flag named by its flat name
(service/setting_names.py: `--judge-style`); `serve --help` shows the operator's decisions, the
other flags are hidden but work. Precedence, highest first: flags, variables (`.env` too), the
pre-grouping variables (`CONSCIENCE_JUDGE_STYLE`, deprecated for one release), secret files, the
`--config` file, the defaults (service/setting_sources.py).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from service.setting_groups import (
    ANY_FRAMEWORK,
    ASYNC_DRIVERS,
    MIN_ADMIN_KEY_CHARS,
    AdaptersSettings,
    BackendKind,
    EnforceStreaming,
    FailurePolicy,
    JudgeSettings,
    JudgeStyle,
    LimitsSettings,
    LocalSettings,
    LocalWeights,
    Mode,
    MonitorOverflow,
    PolicySettings,
    RepairSettings,
    RepairStrategy,
    SecuritySettings,
    ServingSettings,
    StoreSettings,
    UpstreamSettings,
    parse_judge_styles,
    parse_model_aliases,
    parse_names,
)
from service.setting_names import FLAT_NAMES
from service.setting_sources import (
    ConfigFile,
    LegacyVariables,
    SecretFiles,
    SettingsSourceError,
    config_path,
    deprecated_names,
    environment_with_dotenv,
    flat_names_given,
    legacy_variable,
    nest,
    secret_file,
    variable,
)

__all__ = [
    "ANY_FRAMEWORK", "ASYNC_DRIVERS", "MIN_ADMIN_KEY_CHARS", "BackendKind", "EnforceStreaming", "FailurePolicy",
    "JudgeStyle", "LocalWeights", "Mode", "MonitorOverflow", "RepairStrategy", "SettingsSourceError",
    "parse_judge_styles", "parse_model_aliases", "parse_names", "variable",
]

# Hosts only this machine can reach: the API documentation is served there by default.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONSCIENCE_", env_file=".env", env_nested_delimiter="__", extra="ignore",
        use_enum_values=False,
    )
    # Each setting's flag and pre-grouping name (a subclass adds its own groups' names).
    flat_names: ClassVar[Mapping[str, str]] = FLAT_NAMES

    config: Path | None = Field(
        None,
        description="A settings file, TOML or YAML. One table per group (`limits` holding `max_n = 8`); "
        "flags and variables override it (docs/settings.md).",
    )
    serving: ServingSettings = Field(default_factory=ServingSettings, description=ServingSettings.__doc__)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings, description=UpstreamSettings.__doc__)
    policy: PolicySettings = Field(default_factory=PolicySettings, description=PolicySettings.__doc__)
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description=JudgeSettings.__doc__)
    repair: RepairSettings = Field(default_factory=RepairSettings, description=RepairSettings.__doc__)
    limits: LimitsSettings = Field(default_factory=LimitsSettings, description=LimitsSettings.__doc__)
    store: StoreSettings = Field(default_factory=StoreSettings, description=StoreSettings.__doc__)
    security: SecuritySettings = Field(default_factory=SecuritySettings, description=SecuritySettings.__doc__)
    local: LocalSettings = Field(default_factory=LocalSettings, description=LocalSettings.__doc__)
    adapters: AdaptersSettings = Field(default_factory=AdaptersSettings, description=AdaptersSettings.__doc__)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        given = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
        if flat := flat_names_given(given, cls.flat_names):
            warnings.warn(
                f"Settings({', '.join(f'{name}=' for name in flat)}) is deprecated: pass the groups "
                f"({', '.join(cls.path_of(name) for name in flat)})", DeprecationWarning, stacklevel=4,
            )
        return (
            InitSettingsSource(settings_cls, init_kwargs=nest(given, cls.flat_names)),
            env_settings,
            dotenv_settings,
            LegacyVariables(settings_cls, dotenv_settings),
            SecretFiles(settings_cls),
            ConfigFile(settings_cls, config_path(given)),
            file_secret_settings,
        )

    @classmethod
    def from_flags(cls, **values: Any) -> Settings:
        """Settings with these values by flat name (`stream_window_chars=24`, as the flags name
        them) over the environment, the `--config` file and the defaults."""
        return cls(**nest(values, cls.flat_names))

    @classmethod
    def groups(cls) -> dict[str, type[BaseModel]]:
        """Each group's field name and model, in declaration order."""
        return {
            name: info.annotation for name, info in cls.model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        }

    @classmethod
    def setting_fields(cls) -> dict[str, FieldInfo]:
        """Every setting by its path (`judge.style`), group by group."""
        return {
            f"{group}.{name}": info
            for group, model in cls.groups().items() for name, info in model.model_fields.items()
        }

    @classmethod
    def secret_paths(cls) -> tuple[str, ...]:
        """The secrets: environment or file only, never flags."""
        return tuple(path for path, info in cls.setting_fields().items() if info.annotation == SecretStr | None)

    @classmethod
    def variables(cls) -> frozenset[str]:
        """Every variable the settings read by its current name (`CONSCIENCE_JUDGE__STYLE`, a
        secret's `_FILE` too, `CONSCIENCE_CONFIG`); not the deprecated flat ones."""
        paths = ["config", *cls.setting_fields()]
        return frozenset({variable(path) for path in paths} | {variable(path) + "_FILE" for path in cls.secret_paths()})

    @classmethod
    def path_of(cls, flat_name: str) -> str:
        """Where the setting with this flag (`judge_style`) lives: `judge.style`."""
        return {flat: path for path, flat in cls.flat_names.items()}[flat_name]

    def value_at(self, path: str) -> Any:
        """The setting at `judge.style`."""
        group, name = path.split(".", 1)
        return getattr(getattr(self, group), name)

    def updated(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with the settings at these paths replaced (not validated, as `model_copy`)."""
        by_group: dict[str, dict[str, Any]] = {}
        for path, value in changes.items():
            group, name = path.split(".", 1)
            by_group.setdefault(group, {})[name] = value
        return self.model_copy(update={
            group: getattr(self, group).model_copy(update=values) for group, values in by_group.items()
        })

    def deprecated_names(self) -> list[str]:
        """A line per pre-grouping variable in use, naming its new name (`serve` logs them)."""
        return list(deprecated_names(self.flat_names, self.secret_paths(), self.model_config.get("env_file")))

    @property
    def docs_served(self) -> bool:
        """--docs-enabled, else whether the server listens on a loopback address only."""
        if self.security.docs_enabled is not None:
            return self.security.docs_enabled
        return self.serving.host in LOOPBACK_HOSTS

    @model_validator(mode="after")
    def _local_model_is_named_once(self) -> Settings:
        """With --backend local, --model is the model to load (vLLM's meaning); --local-model
        is its other spelling. The policy there is the registry's active adapter."""
        serving, local = self.serving, self.local
        if serving.backend is BackendKind.LOCAL and serving.model is not None:
            if local.model not in (None, serving.model):
                raise ValueError(
                    f"serving.model: --model {serving.model!r} and --local-model {local.model!r} differ; "
                    "with --backend local both name the model to load: give one"
                )
            local.model, serving.model = serving.model, None
        if serving.backend is BackendKind.LOCAL and local.model is not None:
            _check_model_path(local.model)
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            if name in self.flat_names.values():
                raise AttributeError(
                    f"Settings has no {name!r}: it is settings.{self.path_of(name)} "
                    "(scripts/rename_settings.py rewrites old names)"
                ) from None
            raise


def environment_secret(name: str) -> str | None:
    """A secret of a command other than the proxy's (`train`, `adapters`): the variable, or the
    file `<name>_FILE` names; never a flag, which `ps` shows to everyone."""
    return os.environ.get(name) or secret_file(name) or None


def secret_names(settings_class: type[Settings]) -> tuple[str, ...]:
    """The flat names of a settings class's secrets (their refused flags)."""
    return tuple(settings_class.flat_names[path] for path in settings_class.secret_paths())


SECRET_SETTINGS = secret_names(Settings)

S = TypeVar("S", bound=Settings)

# A Hugging Face id: `name` or `org/name`, nothing that reads as a path.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def _check_model_path(model: str) -> None:
    path = Path(model).expanduser()
    if path.exists() or (_HUB_ID.match(model) and not model.startswith(".") and path.suffix != ".gguf"):
        return
    raise ValueError(f"serving.model: {model!r} is neither a file nor a directory (nor a Hugging Face id)")


def _error_path(settings_class: type[Settings], loc: tuple[Any, ...], message: str) -> tuple[str | None, str]:
    """The setting an error is about (`judge.style`) and the message without its `name: ` prefix."""
    parts = [str(part) for part in loc]
    known = settings_class.setting_fields()
    if len(parts) >= 2 and f"{parts[0]}.{parts[1]}" in known:
        return f"{parts[0]}.{parts[1]}", message
    prefix = re.match(r"([\w.]+): ", message)
    if prefix:
        candidate = f"{parts[0]}.{prefix[1]}" if len(parts) == 1 else prefix[1]
        if candidate in known:
            return candidate, message[prefix.end():]
    if len(parts) == 1 and parts[0] in settings_class.model_fields:
        return parts[0], message
    return None, message


def _where(settings_class: type[Settings], path: str) -> str:
    """How the user names the setting: its flag and the variable in use (a deprecated one if
    that is what is set)."""
    if path not in settings_class.flat_names:
        return f"--{path.replace('_', '-')} / {variable(path)}"  # `config`
    flat = settings_class.flat_names[path]
    named = variable(path)
    legacy = legacy_variable(flat)
    env_file = settings_class.model_config.get("env_file")
    environment = environment_with_dotenv(env_file)
    if named not in environment and (legacy in environment or f"{legacy}_FILE" in environment):
        named = legacy
    if path in settings_class.secret_paths():
        return named
    return f"--{flat.replace('_', '-')} / {named}"


def setting_errors(error: ValidationError, settings_class: type[Settings] = Settings) -> list[str]:
    """One line per bad setting, naming its flag and variable: what the CLI prints."""
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        path, message = _error_path(settings_class, item["loc"], message)
        if item["type"] == "extra_forbidden":
            lines.append(f"{'.'.join(map(str, item['loc']))}: no such setting (docs/settings.md lists them)")
            continue
        if path is None:
            lines.append(message)
            continue
        secret = path in settings_class.secret_paths()
        shown = item.get("input")
        got = f" (got {shown!r})" if len(item["loc"]) >= 2 and not secret and not isinstance(shown, dict) else ""
        lines.append(f"{_where(settings_class, path)}: {message}{got}")
    return lines


def load_settings(settings_class: type[S] = Settings, **overrides: object) -> S:  # type: ignore[assignment]
    """Settings from the environment, with explicit overrides (CLI flags, by flat name) on top."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    return settings_class.from_flags(**clean)  # type: ignore[return-value]

