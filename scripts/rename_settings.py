"""Rewrite flat setting names to grouped ones, from the table in service/setting_names.py.

    python -m scripts.rename_settings FILE...              # settings.upstream_url -> settings.upstream.url
    python -m scripts.rename_settings --variables FILE...  # also CONSCIENCE_UPSTREAM_URL -> CONSCIENCE_UPSTREAM__URL
    python -m scripts.rename_settings --check FILE...      # list what would change; exit 1 if anything

For code written against the flat `Settings` (a branch merged after the settings were grouped):
an attribute is renamed where its receiver's name ends in `settings` (`settings.x`,
`self._settings.x`, `app.state.settings.x`). Other receivers (`s.x`, `Settings().x`) are left
alone: the AttributeError names the new place. Running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from evaluation.settings import EvaluationSettings
from service.setting_sources import legacy_variable, variable

# Methods and properties that moved to a group with the settings they read.
MOVED_MEMBERS = {
    "lets_clients_choose_framework": "policy.lets_clients_choose_framework",
    "allowed_client_judge_styles": "judge.allowed_client_styles",
    "model_alias_map": "serving.model_alias_map",
}
TABLE: Mapping[str, str] = {
    **{flat: path for path, flat in EvaluationSettings.flat_names.items()}, **MOVED_MEMBERS,
}
TABLE_FLAT: Mapping[str, str] = EvaluationSettings.flat_names
SECRETS = {EvaluationSettings.flat_names[path] for path in EvaluationSettings.secret_paths()}

_ATTRIBUTE = re.compile(r"(\b\w*settings)\.(" + "|".join(sorted(TABLE, key=len, reverse=True)) + r")\b")
_BY_VARIABLE = {legacy_variable(flat): path for flat, path in TABLE.items() if flat not in MOVED_MEMBERS}
_VARIABLE = re.compile(
    r"\b(" + "|".join(sorted(_BY_VARIABLE, key=len, reverse=True)) + r")(_FILE)?\b"
)


def renamed(text: str, variables: bool = False) -> str:
    """`text` with flat settings attributes (and, with `variables`, old variable names) renamed."""
    text = _ATTRIBUTE.sub(lambda match: f"{match[1]}.{TABLE[match[2]]}", text)
    if variables:
        text = _VARIABLE.sub(_new_variable, text)
    return text


def _new_variable(match: re.Match[str]) -> str:
    """CONSCIENCE_ADMIN_KEY(_FILE) -> CONSCIENCE_SECURITY__ADMIN_KEY(_FILE); a `_FILE` only for secrets."""
    path, file_suffix = _BY_VARIABLE[match[1]], match[2] or ""
    if file_suffix and TABLE_FLAT[path] not in SECRETS:
        return match[0]
    return variable(path) + file_suffix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--variables", action="store_true", help="rename CONSCIENCE_* variables too")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    args = parser.parse_args(argv)
    changed = []
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        updated = renamed(text, variables=args.variables)
        if updated != text:
            changed.append(path)
            if not args.check:
                path.write_text(updated, encoding="utf-8")
    for path in changed:
        print(f"{path}: {'would be renamed' if args.check else 'renamed'}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
