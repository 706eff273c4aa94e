"""Frameworks are data: the built-ins load, user YAML files add or override, bad files say why."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.frameworks import FrameworkError, load_frameworks
from service.settings import Settings


def test_builtins_are_complete() -> None:
    frameworks = load_frameworks()
    assert set(frameworks) == {"three_laws", "four_laws", "wwjd", "introspective"}
    four = frameworks["four_laws"].principles
    assert four.index("0.") < four.index("1.")  # the Zeroth Law comes first
    for virtue in ("Compassion", "Non-violence", "Honesty", "Humility", "Mercy"):
        assert virtue in frameworks["wwjd"].principles
    assert "good and wise person" in frameworks["introspective"].principles
    for framework in frameworks.values():
        instructions = framework.judge_instructions()
        assert framework.principles.strip() in instructions and "{" not in instructions
        assert "Yes or No" in framework.judge_question(reasoned=False)
        assert '"verdict"' in framework.judge_question(reasoned=True)
        assert "not a bare refusal" in framework.regenerate_instructions()
        assert framework.principles.strip() in framework.reframe_instructions()
        assert framework.principles.strip() not in framework.reframed_answer_instructions()


def test_user_frameworks_add_and_override(tmp_path: Path) -> None:
    (tmp_path / "stoic.yaml").write_text(
        "name: stoic\ntitle: Stoic virtues\nprinciples: Wisdom, justice, courage, temperance.\n"
        "judge_template: 'Judge by {name}: {principles}'\n"
    )
    (tmp_path / "wwjd.yml").write_text("name: wwjd\nprinciples: Love your neighbour.\nreframe_stems: []\n")
    (tmp_path / "care.yaml").write_text("name: care\nprinciples: Do no harm.\nreframe_stems: [' How safe is ']\n")
    frameworks = load_frameworks(tmp_path)
    stoic = frameworks["stoic"]
    assert stoic.reframe_stems == frameworks["three_laws"].reframe_stems and len(stoic.reframe_stems) == 2
    assert frameworks["wwjd"].reframe_stems == () and frameworks["care"].reframe_stems == ("How safe is",)
    assert stoic.judge_instructions().startswith(
        "Judge by Stoic virtues: Wisdom, justice, courage, temperance."
    )
    assert stoic.reframe_template == frameworks["three_laws"].reframe_template  # the default
    assert frameworks["wwjd"].principles.strip() == "Love your neighbour."


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- just a list", "must be a YAML mapping"),
        ("name: Bad Name\nprinciples: x\n", "'name' must be lowercase"),
        ("name: ok\n", "'principles' must be a non-empty text"),
        ("name: ok\nprinciples: x\ncolour: red\n", "unknown keys ['colour']"),
        ("name: ok\nprinciples: x\njudge_template: 'Hi {user}'\n", "placeholders {name} and {principles}"),
        ("name: ok\nprinciples: [unclosed\n", "cannot read framework"),
        ("name: ok\nprinciples: x\nmentions: Asimov\n", "'mentions' must be a list of non-empty texts"),
        ("name: ok\nprinciples: x\nmentions: ['']\n", "'mentions' must be a list of non-empty texts"),
        ("name: ok\nprinciples: x\nreframe_stems: What is\n", "'reframe_stems' must be a list of non-empty texts"),
    ],
)
def test_bad_framework_files_are_named_with_the_reason(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "broken.yaml").write_text(content)
    with pytest.raises(FrameworkError) as caught:
        load_frameworks(tmp_path)
    assert "broken.yaml" in str(caught.value) and message in str(caught.value)


def test_the_settings_refuse_an_unknown_default_framework(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown framework 'nope'"):
        Settings(framework="nope")
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(frameworks_dir=tmp_path / "missing")
