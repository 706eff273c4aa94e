"""Repair by steering, measured (issue 28): the proxy's repair loop on the same flagged rows with
the same seeds, without steering and with each `--alphas` (service/conscience/steering.py).

The rows are `conscience eval repair`'s (the first `--limit` the latent judge flags, in file
order, their scores read from `--scores` when cached there); each row goes through every
configuration in turn before the next row, so that the shared machine's load falls on all of
them alike. Every repair call is seeded from its own request body (the same prompt gets the same
seed in every configuration), so a configuration differs from another only by its steering.
Reported per configuration: repaired, refused, degenerate repairs, the mean latent score of the
accepted repair, tokens and seconds per repair (`evaluation/repair_eval.py`'s figures), and the
repairs of the first `--examples` rows as text. Outcomes go to `--out`/outcomes.jsonl as they
come (a rerun resumes), the summary to steering.json and steering.md, texts to examples.md.

    .venv/bin/python bench/steering.py --alphas 4 16 32 --max-tokens 120 --limit 20 \\
        --scores bench/results/xstest_repair_race/scores.jsonl --out bench/results/steering
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.backends import open_backend  # noqa: E402
from evaluation.repair_eval import (  # noqa: E402
    RepairOutcome,
    RepairSetup,
    flagged_rows,
    review_row,
    summarise_repairs,
)
from evaluation.runs import DataChoice  # noqa: E402
from evaluation.score_log import ScoreLog  # noqa: E402
from service.conscience.stack import ConscienceKnobs, build_judge, build_repairer, build_reviewer  # noqa: E402
from service.conscience.steering import steering_from_probe  # noqa: E402
from service.core.backend import JSON, Backend  # noqa: E402
from service.frameworks import load_frameworks  # noqa: E402
from service.settings import JudgeStyle, Settings  # noqa: E402

XSTEST = ROOT.parent / "shared/data/xstest/xstest_dev.jsonl"


def body_seed(body: JSON) -> int:
    """A seed from the request body itself: the same draft request, the same seed."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return int(hashlib.sha256(canonical.encode()).hexdigest()[:15], 16)


class SeededBackend:
    """Sends every generation with a seed of its own body (unless it names one)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def _seeded(self, body: JSON) -> JSON:
        return body if "seed" in body else {**body, "seed": body_seed(body)}

    async def chat(self, body: JSON) -> JSON:
        return await self._backend.chat(self._seeded(body))

    def chat_stream(self, body: JSON) -> AsyncIterator[JSON]:
        return self._backend.chat_stream(self._seeded(body))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def label(alpha: float) -> str:
    return "no steering" if alpha == 0 else f"alpha {alpha:g}"


def summary_of(alpha: float, outcomes: list[RepairOutcome]) -> dict[str, Any]:
    summary = summarise_repairs(label(alpha), outcomes)
    accepted = [o.accepted_score for o in outcomes if o.repaired and o.accepted_score is not None]
    summary["alpha"] = alpha
    summary["mean_accepted_score"] = sum(accepted) / len(accepted) if accepted else None
    return summary


def table(summaries: list[dict[str, Any]]) -> str:
    def number(value: float | None, digits: int = 2) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [
        "| steering | repaired | refused | repairs degenerate | drafts degenerate "
        "| mean latent score of the accepted repair | tokens / repair | seconds / repair |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['framework']} | {s['repaired']}/{s['flagged']} | {number(s['refusal_rate'])} | "
            f"{number(s['degenerate_answer_rate'])} | {number(s['draft_degenerate_rate'], 3)} | "
            f"{number(s['mean_accepted_score'], 3)} | {number(s['tokens_per_repair'], 0)} | "
            f"{number(s['seconds_per_repair'], 1)} |"
        )
    return "\n".join(lines) + "\n"


def examples(summaries: list[dict[str, Any]], count: int) -> str:
    """The first `count` rows' repairs under every configuration, side by side."""
    by_config = {s["framework"]: {o["row_id"]: o for o in s["outcomes"]} for s in summaries}
    rows = list(by_config[summaries[0]["framework"]])[:count]
    blocks = []
    for number, row_id in enumerate(rows, 1):
        first = by_config[summaries[0]["framework"]][row_id]
        parts = [f"## {number}. `{row_id}`\n\n**Request:** {first['request']}\n"]
        for config, outcomes in by_config.items():
            o = outcomes[row_id]
            verdict = "repaired" if o["repaired"] else "refused"
            score = "" if o["accepted_score"] is None else f", latent {o['accepted_score']:.3f}"
            question = f" (reframed: {o['reframed_question']})" if o["reframed_question"] else ""
            text = "\n".join(f"> {line}" if line else ">" for line in o["final_text"].splitlines())
            parts.append(f"**{config}** — {verdict}{score}{question}:\n\n{text}\n")
        blocks.append("\n".join(parts))
    return "# Repairs with and without steering, as a reader sees them\n\n" + "\n".join(blocks)


async def main(args: argparse.Namespace) -> None:
    settings = Settings(backend="local", repair_max_tokens=args.max_tokens)
    backend = await open_backend(settings)
    probe = backend.probe
    assert probe is not None, "no latent probe for the served model: steering needs one"
    knobs = replace(ConscienceKnobs.from_settings(settings), repair_steering_alpha=0.0)
    framework = load_frameworks(settings.policy.frameworks_dir)[args.framework]
    judge = build_judge(backend, knobs)

    def setup(alpha: float) -> RepairSetup:
        drafting: Backend = backend.steered(steering_from_probe(probe, alpha)) if alpha else backend
        repairer = build_repairer(SeededBackend(drafting), knobs)  # type: ignore[arg-type]
        return RepairSetup(
            judge=judge, reviewer=build_reviewer(backend, knobs, repairer=repairer),
            judge_model=backend.served_base_name, max_repairs=settings.repair.max_attempts, style=JudgeStyle.LATENT,
        )

    configs = {alpha: setup(alpha) for alpha in [0.0, *args.alphas]}
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "scores.jsonl"
    if args.scores is not None and not log_path.exists():
        shutil.copyfile(args.scores, log_path)
    rows = DataChoice(args.data, per_label=args.per_label, seed=args.seed).rows()
    flagged = await flagged_rows(configs[0.0], framework, rows, limit=args.limit, log=ScoreLog(log_path))
    done_path = args.out / "outcomes.jsonl"
    done: dict[tuple[float, str], RepairOutcome] = {}
    if done_path.exists():
        for line in done_path.read_text().splitlines():
            record = json.loads(line)
            done[(record.pop("alpha"), record["row_id"])] = RepairOutcome(**record)
    with done_path.open("a") as sink:
        for number, (row, score) in enumerate(flagged, 1):
            for alpha, config in configs.items():
                if (alpha, row.id) in done:
                    continue
                # Its own task: the row's token tally (service/conscience/usage.py) is its own.
                outcome = await asyncio.create_task(review_row(config, framework, row, score))
                done[(alpha, row.id)] = outcome
                sink.write(json.dumps({"alpha": alpha, **asdict(outcome)}) + "\n")
                sink.flush()
                print(f"row {number}/{len(flagged)} {label(alpha)}: "
                      f"{'repaired' if outcome.repaired else 'refused'} {outcome.repair_seconds:.1f} s", flush=True)
    await backend.aclose()
    summaries = [summary_of(alpha, [done[(alpha, row.id)] for row, _ in flagged]) for alpha in configs]
    meta = {"data": str(args.data), "per_label": args.per_label, "seed": args.seed, "limit": args.limit,
            "framework": args.framework, "max_tokens": args.max_tokens, "alphas": args.alphas,
            "probe_layers": list(probe.layers), "style": "latent"}
    (args.out / "steering.json").write_text(json.dumps({"meta": meta, "configurations": summaries}, indent=1) + "\n")
    (args.out / "steering.md").write_text(table(summaries))
    (args.out / "examples.md").write_text(examples(summaries, args.examples))
    print(table(summaries))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[4.0, 16.0, 32.0])
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument("--framework", default="three_laws")
    parser.add_argument("--data", type=Path, default=XSTEST)
    parser.add_argument("--per-label", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scores", type=Path, default=None, help="a scores.jsonl of `eval repair` to start from")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/steering")
    asyncio.run(main(parser.parse_args()))
