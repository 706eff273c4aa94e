"""Check a `conscience …` command line written outside the code (README and docs/, compose, manifests)
against the real CLI: every subcommand and every `--option` must exist (and not be a refused
secret's hidden flag)."""

from __future__ import annotations

from conscience_cli import main as cli


def problems(words: list[str]) -> list[str]:
    """What is wrong with `conscience <words>`: unknown commands and options (empty: fine)."""
    command = cli.command_tree()
    position = 0
    wrong = []
    # Typer's groups are not click.Group subclasses in every release: walk `commands`.
    while hasattr(command, "commands") and position < len(words):
        found = command.commands.get(words[position])
        if found is None:
            return [f"{' '.join(words)}: no command {words[position]!r}"]
        command, position = found, position + 1
    # A hidden option is one the command refuses (a secret's flag): documenting it is wrong too.
    known = {
        name for param in command.params if not getattr(param, "hidden", False)
        for name in (*param.opts, *param.secondary_opts)
    }
    for word in words[position:]:
        option = word.split("=", 1)[0]
        if option.startswith("--") and option not in known:
            wrong.append(f"{' '.join(words)}: no option {option}")
    return wrong
