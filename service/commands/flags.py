"""The one bridge from typed settings to CLI flags, so a knob is documented in one place only.

Two sources, one shape (a `--flag` per field, its help text and environment variable from the
field):

- `Settings` (pydantic-settings): `settings_parameter(name)` is an optional flag named by the
  setting's flat name (`--judge-style` for `judge.style`, service/setting_names.py) whose None
  means "not given", so the setting falls back to `CONSCIENCE_*`, `.env`, the `--config` file
  and its default. `conscience serve` takes every setting (those that are not an operator's
  decisions as hidden flags); the eval commands the few they override.
- A config dataclass (TRL-style `<method>_config.py`, fields made with `knob`):
  `dataclass_parameters(cls)` are flags with the field's default and `envvar`.

A secret is never a flag (`ps` shows a command line to every user): `refused_secret(flag,
variable)` is a hidden flag that, given, exits 2 with one line naming where the secret goes
instead (the variable, or a file named by `<variable>_FILE`); `secret_refusals(settings_class)`
is one per secret setting (`conscience serve`).

`with_parameters(command, parameters)` gives a `**flags` command its generated signature;
`overriding(settings_class, *names)` adds setting flags to a hand-written command and calls
it with `settings=` built from them (the eval commands).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields
from typing import Annotated, Any, TypeVar

import typer
from pydantic import SecretStr

from service.commands.errors import fail, settings_or_exit
from service.settings import Settings, variable

F = TypeVar("F", bound=Callable[..., Any])


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def first_sentence(text: str) -> str:
    """The help's first sentence, for a listing that must fit on one screen."""
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def settings_parameter(
    name: str, settings_class: type[Settings] = Settings, *, hidden: bool = False, brief: bool = False
) -> inspect.Parameter:
    """`--<name>` of one setting (its flat name, or `config`): `Optional[T]`, default None ("not
    given"). `hidden`: it works but `--help` leaves it out; `brief`: the help's first sentence."""
    path = name if name in settings_class.model_fields else settings_class.path_of(name)
    field = settings_class.model_fields[name] if path == name else settings_class.setting_fields()[path]
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    assert annotation is not SecretStr, f"{name} is a secret: not a flag"
    declarations = [f"{_flag(name)}/--no-{name.replace('_', '-')}"] if annotation is bool else [_flag(name)]
    description = first_sentence(field.description or "") if brief else field.description
    help_text = f"{description} [env {variable(path)}; default: {field.default!s}]"
    option = typer.Option(*declarations, help=help_text, hidden=hidden)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[typing.Optional[annotation], option],  # noqa: UP045 - typer needs a runtime type
        default=None,
    )


def refused_secret(flag: str, variable: str) -> Any:
    """The typer option of a hidden `flag` that takes no secret: given any value, exit 2 with
    one line saying where the secret goes instead. The value is neither echoed nor handed to
    the command (annotate a parameter with it; its value is always the default)."""

    def refuse(value: str | None) -> None:
        if value is not None:
            fail(
                f"{flag} is not accepted: a secret on the command line is shown to every user "
                f"(ps); set {variable}, or name a file holding it with {variable}_FILE"
            )

    return typer.Option(flag, hidden=True, expose_value=False, is_eager=True, callback=refuse)


def refused_secret_parameter(name: str, variable: str) -> inspect.Parameter:
    """`--<name>` refused (`refused_secret`), as a parameter of a `**flags` command. Typer
    still calls the command with `<name>=None`: `load_settings` drops it (None is "not given");
    a command that builds something else from its flags takes `<name>` apart."""
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[typing.Optional[str], refused_secret(_flag(name), variable)],  # noqa: UP045
        default=None,
    )


def secret_refusals(settings_class: type[Settings] = Settings) -> list[inspect.Parameter]:
    """A refused `--<name>` for each secret of the settings class."""
    return [
        refused_secret_parameter(settings_class.flat_names[path], variable(path))
        for path in settings_class.secret_paths()
    ]


def dataclass_parameters(config_class: type) -> list[inspect.Parameter]:
    """One flag per field of a config dataclass, with its default, `help` and `envvar`."""
    types_ = typing.get_type_hints(config_class)
    parameters = []
    for config_field in fields(config_class):
        envvar = config_field.metadata["envvar"]
        envvars = list(envvar) if isinstance(envvar, tuple) else envvar
        option = typer.Option(help=config_field.metadata["help"], envvar=envvars, show_envvar=envvar is not None)
        if config_field.default_factory is not MISSING:
            default = config_field.default_factory()
        else:
            default = ... if config_field.default is MISSING else config_field.default
        parameters.append(inspect.Parameter(
            config_field.name, inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[types_[config_field.name], option], default=default,
        ))
    return parameters


def with_parameters(command: F, parameters: Iterable[inspect.Parameter]) -> F:
    """`command` (a `**flags` function) as typer sees it: with these keyword parameters."""
    parameters = list(parameters)
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return command


def overriding(settings_class: type[Settings], *names: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The command with a flag per named setting; it is called with `settings=` built from
    those flags over the environment, as `conscience serve` builds its own."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [
            parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for parameter in inspect.signature(command, eval_str=True).parameters.values()
            if parameter.name != "settings"
        ]

        @functools.wraps(command)
        def run(**flags: Any) -> None:
            overrides = {name: flags.pop(name) for name in names}
            command(settings=settings_or_exit(settings_class, **overrides), **flags)

        del run.__wrapped__  # typer must see the generated signature, not the wrapped one's
        return with_parameters(run, [*own, *(settings_parameter(name, settings_class) for name in names)])

    return decorate
