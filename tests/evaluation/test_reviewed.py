"""Reviewers teach the judge: records reviewed through the real store (the `triples` and
`blocked` commands, SQLite and PostgreSQL) become labelled rows, and `calibrate --reviewed`
refits the threshold on them plus a data file, printing the configured and the refitted
threshold's figures on the held-out reviews.

The fake upstream's judge reads each answer's score from a `[s=…]` tag in it, so every expected
figure is computed here from the tags and the labels, independently of the metric code.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conscience_cli.main import command_tree
from evaluation.reviewed import ReviewedRows, is_held_out, last_user_turn, require_enough, reviewed_rows
from service.conscience.thresholds import load_thresholds
from service.store.db import Database
from service.store.ingest import insert_records
from service.store.records import CheckRecord, TripleRecord
from tests.fakes.upstream import FakeUpstream
from tests.store.factories import make_check, make_triple

TAG = re.compile(r"\[s=([0-9.]+)\]")


def tagged_judge(messages: list[dict[str, Any]]) -> dict[str, float]:
    """P(Yes) is the answer's tag: the judge's case ends with the fenced answer."""
    found = TAG.findall(messages[-1]["content"])
    score = float(found[-1]) if found else 0.0
    return {"Yes": score, "No": 1.0 - score}


def score_of(text: str) -> float:
    return float(TAG.findall(text)[-1])


@dataclass(frozen=True)
class Reviewed:
    """The records a test stores and how reviewers decide on them."""

    approved: list[TripleRecord]
    rejected: list[TripleRecord]
    right: list[CheckRecord]
    wrong: list[CheckRecord]
    pending: list[TripleRecord]
    unmarked: list[CheckRecord]

    @property
    def records(self) -> list[TripleRecord | CheckRecord]:
        return [*self.approved, *self.rejected, *self.right, *self.wrong, *self.pending, *self.unmarked]


def triple(key: str, rejected: float, chosen: float, framework: str = "three_laws") -> TripleRecord:
    return make_triple(
        0, framework=framework, judge_model="base-model",
        prompt=[{"role": "system", "content": "Be helpful."}, {"role": "user", "content": "first turn"},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": f"question {key}"}],
        rejected=f"the flagged answer to {key} [s={rejected:.3f}]",
        chosen=f"the repair for {key} [s={chosen:.3f}]",
        details={"rejected_verdict": {"label": "unethical", "score": rejected}},
    )


def blocked(key: str, score: float, framework: str = "three_laws") -> CheckRecord:
    return make_check(
        0, framework=framework, verdict="unethical", score=score, attempts=2, judge_model="base-model",
        prompt=[{"role": "user", "content": f"blocked question {key}"}],
        answer=f"the blocked answer to {key} [s={score:.3f}]", drafts=[],
    )


def stored_reviews(scale: int = 1) -> Reviewed:
    """Harmful answers the judge flagged at 0.60–0.95, harmless ones it flagged at 0.51–0.78
    (its false positives), repairs it passed at 0.005–0.135."""
    return Reviewed(
        approved=[triple(f"a{i}", 0.60 + 0.025 * i, 0.005 + 0.01 * i) for i in range(14 * scale)],
        rejected=[triple(f"r{i}", 0.51 + 0.03 * i, 0.05) for i in range(10 * scale)],
        right=[blocked(f"b{i}", 0.70 + 0.04 * i) for i in range(6 * scale)],
        wrong=[blocked(f"w{i}", 0.51 + 0.02 * i) for i in range(6 * scale)],
        pending=[triple("p0", 0.9, 0.1)],
        unmarked=[blocked("u0", 0.9)],
    )


def truth_of(reviews: Reviewed) -> dict[str, tuple[str, str, bool]]:
    """Row id -> (prompt, completion, should flag): the mapping docs/evaluation.md and the docstring state."""
    rows: dict[str, tuple[str, str, bool]] = {}
    for record in reviews.approved:
        prompt = record.prompt[-1]["content"]
        rows[f"triple:{record.id}:rejected"] = (prompt, record.rejected, True)
        rows[f"triple:{record.id}:chosen"] = (prompt, record.chosen, False)
    for record in reviews.rejected:
        rows[f"triple:{record.id}:rejected"] = (record.prompt[-1]["content"], record.rejected, False)
    for check, flag in [*((c, True) for c in reviews.right), *((c, False) for c in reviews.wrong)]:
        assert check.prompt is not None and check.answer is not None
        rows[f"blocked:{check.id}"] = (check.prompt[-1]["content"], check.answer, flag)
    return rows


async def invoke(*args: str) -> Result:
    # The commands run their own event loop, so they need a thread without one.
    return await asyncio.to_thread(CliRunner().invoke, command_tree(), list(args))


async def review(db_url: str, reviews: Reviewed) -> None:
    """Store the records, then review them as a reviewer would: through the CLI."""
    assert (await invoke("db", "upgrade", "--db-url", db_url)).exit_code == 0
    database = Database(db_url)
    try:
        assert await insert_records(database, reviews.records) == []
    finally:
        await database.dispose()
    url = ["--db-url", db_url]
    for verb, records in (("approve", reviews.approved), ("reject", reviews.rejected)):
        if not records:
            continue
        done = await invoke("triples", verb, *(record.id for record in records), *url)
        assert done.exit_code == 0, done.output
    for flag, checks in (("--right", reviews.right), ("--wrong", reviews.wrong)):
        if not checks:
            continue
        done = await invoke("blocked", "mark", *(check.id for check in checks), flag, *url)
        assert done.exit_code == 0, done.output
        assert done.stdout.strip() == f"Marked {len(checks)} blocked answers {flag[2:]}ly blocked."


async def test_reviewed_records_are_labels_split_by_prompt(db_url: str, empty_db: Database) -> None:
    reviews = stored_reviews()
    await review(db_url, reviews)
    expected = truth_of(reviews)

    split = await reviewed_rows(empty_db, seed=0)
    rows = {row.id: row for row in split.all}
    assert set(rows) == set(expected)  # pending triples and unmarked blocked answers are no labels
    for row_id, (prompt, completion, flag) in expected.items():
        row = rows[row_id]
        assert (row.prompt, row.completion, row.should_flag) == (prompt, completion, flag)
        assert row.label == ("unethical" if flag else "ethical")
    # Split by a seeded hash of the prompt: both rows of an approved triple fall on one side.
    held = {row.id for row in split.held_out}
    assert held and held != set(rows)
    assert all((row_id in held) == is_held_out(rows[row_id].prompt, seed=0) for row_id in rows)
    for record in reviews.approved:
        assert (f"triple:{record.id}:rejected" in held) == (f"triple:{record.id}:chosen" in held)
    # Deterministic, and the seed chooses the prompts.
    assert await reviewed_rows(empty_db, seed=0) == split
    other = await reviewed_rows(empty_db, seed=1)
    assert {row.id for row in other.held_out} != held
    # One framework's records only.
    assert (await reviewed_rows(empty_db, framework="wwjd")).all == []
    require_enough(split, what="three_laws")
    with pytest.raises(ValueError, match="too few reviewed rows to recalibrate three_laws: 20 unethical"):
        require_enough(split, what="three_laws", minimum=21)


def test_the_prompt_is_the_last_user_turn_and_splits_group_it() -> None:
    parts = [{"role": "user", "content": "old"},
             {"role": "user", "content": [{"type": "text", "text": "new"}, {"type": "image_url"}]}]
    assert last_user_turn(parts) == "new"
    assert last_user_turn([{"role": "system", "content": "s"}]) is None
    prompts = [f"prompt {i}" for i in range(400)]
    share = sum(is_held_out(p, seed=3) for p in prompts) / len(prompts)
    assert 0.22 < share < 0.38  # about 30 %
    assert [is_held_out(p, seed=3) for p in prompts] == [is_held_out(p, seed=3) for p in prompts]
    assert ReviewedRows.counts([]) == (0, 0)


def write_data(path: Path) -> Path:
    """Labelled rows below and around the threshold: missed harms and passed harmless answers."""
    rows = [{"id": f"d-u{i}", "prompt": f"data question u{i}", "label": "unethical",
             "completion": f"harmful data answer [s={0.30 + 0.033 * i:.3f}]"} for i in range(20)]
    rows += [{"id": f"d-e{i}", "prompt": f"data question e{i}", "label": "ethical",
              "completion": f"harmless data answer [s={0.004 + 0.011 * i:.3f}]"} for i in range(40)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def lowest_threshold_at(rows: list[tuple[float, bool]], target_fpr: float) -> float:
    """The lowest observed score whose false-positive rate stays at or below the target."""
    negatives = sum(not flag for _, flag in rows)
    chosen = None
    for threshold in sorted({score for score, _ in rows}, reverse=True):
        if sum(score >= threshold and not flag for score, flag in rows) / negatives > target_fpr:
            break
        chosen = threshold
    assert chosen is not None
    return chosen


def figures(rows: list[tuple[float, bool]], threshold: float) -> dict[str, float]:
    tp = sum(score >= threshold and flag for score, flag in rows)
    fp = sum(score >= threshold and not flag for score, flag in rows)
    fn = sum(score < threshold and flag for score, flag in rows)
    tn = len(rows) - tp - fp - fn
    recall, fpr = tp / (tp + fn), fp / (fp + tn)
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "recall": recall, "fpr": fpr, "f1": f1}


def printed(output: str, label: str) -> dict[str, float]:
    line = next(line for line in output.splitlines() if line.strip().startswith(label))
    threshold, recall, fpr, f1, tp, fp, tn, fn = line.strip()[len(label):].split()[:8]
    return {"threshold": float(threshold), "recall": float(recall), "fpr": float(fpr), "f1": float(f1),
            "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def assert_printed(output: str, label: str, threshold: float, expected: dict[str, float]) -> None:
    shown = printed(output, label)
    assert shown["threshold"] == pytest.approx(threshold, abs=5e-5)
    for name in ("recall", "fpr", "f1"):
        assert shown[name] == pytest.approx(expected[name], abs=5e-4), name
    assert [shown[n] for n in ("tp", "fp", "tn", "fn")] == [expected[n] for n in ("tp", "fp", "tn", "fn")]


def upstream_flags(fake: FakeUpstream) -> list[str]:
    return ["--backend", "upstream", "--upstream-url", fake.url, "--judge-model", "base-model"]


async def test_calibrate_reviewed_refits_the_threshold_on_the_deployments_reviews(
    fake: FakeUpstream, db_url: str, empty_db: Database, tmp_path: Path
) -> None:
    fake.judge = tagged_judge
    reviews = stored_reviews()
    await review(db_url, reviews)
    data = write_data(tmp_path / "data.jsonl")
    out = tmp_path / "out"

    done = await invoke("calibrate", "--reviewed", "--data", str(data), "--framework", "three_laws",
                        "--db-url", db_url, "--out", str(out), *upstream_flags(fake))
    assert done.exit_code == 0, done.output

    truth = truth_of(reviews)
    held = {row_id for row_id, (prompt, _, _) in truth.items() if is_held_out(prompt, seed=0)}
    held_rows = [(score_of(truth[i][1]), truth[i][2]) for i in held]
    data_rows = [(score_of(row["completion"]), row["label"] == "unethical")
                 for row in map(json.loads, data.read_text().splitlines())]
    fit_rows = [(score_of(truth[i][1]), truth[i][2]) for i in truth if i not in held] + data_rows
    refitted = lowest_threshold_at(fit_rows, 0.05)
    # The configured threshold is the default 0.5 (no thresholds file names base-model): every
    # reviewed answer the judge flagged is flagged again, the false positives with them.
    before, after = figures(held_rows, 0.5), figures(held_rows, refitted)
    assert before["fp"] > after["fp"] and refitted > 0.5  # the refit cuts false alarms
    assert_printed(done.stdout, "before (configured)", 0.5, before)
    assert_printed(done.stdout, "after (refitted)", refitted, after)
    unethical = sum(flag for _, _, flag in truth.values())
    assert f"{len(truth)} reviewed rows ({unethical} unethical, {len(truth) - unethical} ethical)" in done.stdout
    assert f"+ {len(data_rows)} rows of data.jsonl; held out {len(held)}" in done.stdout

    entry = load_thresholds(tmp_path / "thresholds.json").lookup("base-model", "fast", "three_laws")
    assert entry is not None and entry.threshold == pytest.approx(refitted)
    assert entry.figures["rows"] == len(fit_rows)
    reviewed = entry.figures["reviewed"]
    assert reviewed["held_out_rows"] == len(held) and reviewed["fit_rows"] == len(truth) - len(held)
    assert {k: reviewed["before"][k] for k in ("tp", "fp", "tn", "fn")} == {
        k: before[k] for k in ("tp", "fp", "tn", "fn")}
    assert reviewed["after"]["threshold"] == pytest.approx(refitted)
    # The rows fitted on are the data file the entry names, and nothing else.
    fitted = out / "reviewed_fit_three_laws.jsonl"
    assert entry.figures["data"] == fitted.name and (fitted.stat().st_mode & 0o777) == 0o600
    assert len(fitted.read_text().splitlines()) == len(fit_rows)
    import hashlib

    assert entry.data_sha256 == hashlib.sha256(fitted.read_bytes()).hexdigest()
    assert "CONSCIENCE_JUDGE__THRESHOLDS_PATH=thresholds.json" in (tmp_path / ".env").read_text()

    # Run again: the refitted threshold is now the configured one, and it stays.
    again = await invoke("calibrate", "--reviewed", "--data", str(data), "--framework", "three_laws",
                         "--db-url", db_url, "--out", str(out), *upstream_flags(fake))
    assert again.exit_code == 0, again.output
    assert_printed(again.stdout, "before (configured)", refitted, after)
    assert_printed(again.stdout, "after (refitted)", refitted, after)


async def test_calibrate_reviewed_refuses_too_few_reviews_of_a_class(
    fake: FakeUpstream, db_url: str, tmp_path: Path
) -> None:
    fake.judge = tagged_judge
    reviews = stored_reviews()
    await review(db_url, Reviewed(reviews.approved[:4], reviews.rejected, [], reviews.wrong, [], []))
    data = write_data(tmp_path / "data.jsonl")
    done = await invoke("calibrate", "--reviewed", "--data", str(data), "--db-url", db_url,
                        "--framework", "three_laws", *upstream_flags(fake))
    assert done.exit_code == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: too few reviewed rows to recalibrate three_laws: 4 unethical"), line
    assert not (tmp_path / "thresholds.json").exists() and fake.calls("verdict") == []
    # Another framework has no reviews at all; an unmigrated database is one line too.
    other = await invoke("calibrate", "--reviewed", "--data", str(data), "--db-url", db_url,
                         "--framework", "wwjd", *upstream_flags(fake))
    assert other.exit_code == 1 and "0 unethical" in other.stderr
    empty = await invoke("calibrate", "--reviewed", "--data", str(data), "--framework", "three_laws",
                         "--db-url", f"sqlite+aiosqlite:///{tmp_path / 'none.db'}", *upstream_flags(fake))
    assert empty.exit_code == 1 and "conscience db upgrade" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1


async def test_several_data_files_only_with_reviewed(fake: FakeUpstream, tmp_path: Path) -> None:
    data = write_data(tmp_path / "data.jsonl")
    done = await invoke("calibrate", "--data", str(data), "--data", str(data), *upstream_flags(fake))
    assert done.exit_code == 2 and "several only with --reviewed" in done.output


def test_several_data_files_keep_their_rows_apart(tmp_path: Path) -> None:
    from evaluation.reviewed_calibrate import Inputs

    first, second = write_data(tmp_path / "first.jsonl"), write_data(tmp_path / "second.jsonl")
    rows = Inputs([first, second], None, None, 0, 0.05, tmp_path, 1).data_rows()
    assert len(rows) == 120 and rows[0].id == "first:d-u0" and rows[60].id == "second:d-u0"
    assert [row.id for row in Inputs([first], None, None, 0, 0.05, tmp_path, 1).data_rows()][:1] == ["d-u0"]
    balanced = Inputs([first, second], None, 5, 0, 0.05, tmp_path, 1).data_rows()
    assert ReviewedRows.counts(balanced) == (5, 5)
