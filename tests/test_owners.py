"""One owner for each of the conscience's decisions (issue 27): which judge style is served,
and the policy a request is reviewed under, are decided in one place each, which every surface
(chat, completions, Responses, the check API, moderations) and every evaluation asks."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _service_files() -> list[tuple[str, ast.AST]]:
    return [
        (str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted((ROOT / "service").rglob("*.py"))
    ]


def _where(predicate: object) -> set[str]:
    return {name for name, tree in _service_files() for node in ast.walk(tree) if predicate(node)}  # type: ignore[operator]


def test_the_served_judge_style_is_read_from_the_settings_in_one_place() -> None:
    """`JudgeStyles.serving` (service/conscience/policy.py) decides it once the backend is built;
    no second Settings object carries another answer."""

    def reads_judge_style(node: ast.AST) -> bool:
        if not isinstance(node, ast.Attribute):
            return False
        receiver = ast.unparse(node.value)
        return (node.attr == "judge_style" and "settings" in receiver) or (
            node.attr == "style" and receiver.endswith("settings.judge")  # the grouped setting
        )

    assert _where(reads_judge_style) == {"service/conscience/policy.py"}


def test_a_review_policy_is_built_only_by_the_planner() -> None:
    """Framework, judge style, judge model and repairs: planned in one call, for the proxy's
    surfaces and for the check API alike."""

    def builds_policy(node: ast.AST) -> bool:
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "ReviewPolicy"

    assert _where(builds_policy) == {"service/conscience/planning.py"}
