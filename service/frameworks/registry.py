"""Ethical frameworks are data: built-in YAML files shipped in the package plus user files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BUILTIN_DIR = Path(__file__).parent / "builtin"
_TEMPLATES_FILE = BUILTIN_DIR / "_templates.yaml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class FrameworkError(ValueError):
    """A framework file is malformed, or a framework name is unknown."""


@dataclass(frozen=True, slots=True)
class Framework:
    name: str
    title: str
    principles: str
    judge_template: str
    fast_suffix: str
    reasoned_suffix: str
    regenerate_template: str
    reframe_template: str
    reframed_answer_template: str
    continue_template: str
    # Phrases (besides the title) by which an answer names the framework; a repair must not.
    mentions: tuple[str, ...] = ()
    # Openings of reframed questions, prefilled as the reframe reply's first words: a 0.5B model
    # asked for a safe question writes the harmful request back; begun for it, it finishes a
    # safe one (docs/repairs.md).
    reframe_stems: tuple[str, ...] = ()

    def is_mentioned_in(self, text: str) -> bool:
        """Whether `text` names this framework (its title or one of its `mentions`, any case):
        a repair answers the request and never cites the framework it was steered by."""
        lowered = text.lower()
        return any(phrase.lower() in lowered for phrase in (self.title, *self.mentions) if phrase)

    def judge_instructions(self) -> str:
        """The judge's fixed system text: the same for every request (a cacheable prefix)."""
        return self.judge_template.format(name=self.title, principles=self.principles.strip()).strip()

    def judge_question(self, *, reasoned: bool) -> str:
        """The question asked after the fenced case: a Yes/No one, or analysis then JSON."""
        return (self.reasoned_suffix if reasoned else self.fast_suffix).format().strip()

    def regenerate_instructions(self) -> str:
        """A repair drafted afresh from the request alone (the rejected answer is not shown)."""
        return self.regenerate_template.format(name=self.title, principles=self.principles.strip()).strip()

    def reframe_instructions(self) -> str:
        """Turns the request into the closest question that is safe to answer in full."""
        return self.reframe_template.format(name=self.title, principles=self.principles.strip()).strip()

    def reframed_answer_instructions(self) -> str:
        """Answers a reframed question; the framework is not in it (the question carries it)."""
        return self.reframed_answer_template.format(name=self.title, principles=self.principles.strip()).strip()

    def continue_instructions(self) -> str:
        """A repair that continues an answer whose beginning the client already has (windowed
        enforce streaming: service/conscience/engine.py)."""
        return self.continue_template.format(name=self.title, principles=self.principles.strip()).strip()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FrameworkError(f"{path}: cannot read framework: {exc}") from exc
    if not isinstance(data, dict):
        raise FrameworkError(f"{path}: a framework file must be a YAML mapping")
    return data


def _check_template(path: Path, key: str, template: str) -> None:
    try:
        template.format(name="", principles="")
    except (KeyError, IndexError, ValueError) as exc:
        raise FrameworkError(
            f"{path}: {key} may only use the placeholders {{name}} and {{principles}} "
            f"(write literal braces as {{{{ and }}}}): {exc}"
        ) from exc


def _texts(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise FrameworkError(f"{path}: '{key}' must be a list of non-empty texts")
    return tuple(item.strip() for item in value)


def _framework_from(
    path: Path, data: dict[str, Any], defaults: dict[str, str], default_stems: tuple[str, ...]
) -> Framework:
    name = data.get("name")
    principles = data.get("principles")
    if not isinstance(name, str) or not _NAME.match(name):
        raise FrameworkError(f"{path}: 'name' must be lowercase letters, digits, '_' or '-'")
    if not isinstance(principles, str) or not principles.strip():
        raise FrameworkError(f"{path}: 'principles' must be a non-empty text")
    unknown = set(data) - {"name", "title", "principles", "mentions", "reframe_stems", *defaults}
    if unknown:
        raise FrameworkError(f"{path}: unknown keys {sorted(unknown)}")
    templates = {key: data.get(key) or default for key, default in defaults.items()}
    for key, template in templates.items():
        if not isinstance(template, str):
            raise FrameworkError(f"{path}: '{key}' must be a text")
        _check_template(path, key, template)
    stems = _texts(path, "reframe_stems", data["reframe_stems"]) if "reframe_stems" in data else default_stems
    return Framework(
        name=name, title=str(data.get("title") or name), principles=principles,
        mentions=_texts(path, "mentions", data.get("mentions") or []), reframe_stems=stems, **templates,
    )


def load_frameworks(user_dir: Path | None = None) -> dict[str, Framework]:
    """Built-ins, then user files (`*.yaml`/`*.yml`) which may override a built-in by name."""
    shipped = _read_yaml(_TEMPLATES_FILE)
    default_stems = _texts(_TEMPLATES_FILE, "reframe_stems", shipped.pop("reframe_stems", []))
    defaults = {key: str(value) for key, value in shipped.items()}
    paths = sorted(p for p in BUILTIN_DIR.glob("*.yaml") if not p.name.startswith("_"))
    if user_dir is not None:
        if not user_dir.is_dir():
            raise FrameworkError(f"frameworks directory {user_dir} does not exist")
        paths += sorted([*user_dir.glob("*.yaml"), *user_dir.glob("*.yml")])
    frameworks: dict[str, Framework] = {}
    for path in paths:
        framework = _framework_from(path, _read_yaml(path), defaults, default_stems)
        frameworks[framework.name] = framework
    return frameworks
