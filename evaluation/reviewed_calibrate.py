"""`conscience calibrate --reviewed`: refit the judge on this deployment's own reviewed traffic.

The reviewed records (evaluation/reviewed.py: approved and rejected triples, blocked answers
marked right or wrong) are split by prompt into a fit part and a held-out part. The judge is
refitted on the fit part plus the labelled data file(s) given with --data:

- `fast` / `reasoned`: each framework's threshold, chosen at --target-fpr by the same code as
  `calibrate` (evaluation/calibrate.py: calibrated_threshold) on the reviewed rows of that
  framework plus the data rows, stored under the judge model in the thresholds file;
- `latent` (--probe): a new probe for the local model (evaluation/probe_calibrate.py:
  calibrate_probe) on the reviewed rows of every framework (a latent verdict reads none) plus
  the data rows.

Both are then measured on the held-out reviews beside the judge as configured now (the
thresholds file or --threshold; the configured or shipped probe): recall, false-positive rate,
F1 and the confusion counts, before and after. The rows fitted on are written to the output
directory (`reviewed_fit_<name>.jsonl`, owner-only) and named by their sha256 in the artefact,
so a refit can be repeated and audited.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from evaluation import runs
from evaluation.backends import EvaluationSetupError
from evaluation.calibrate import THRESHOLDS_VARIABLE, calibrated_threshold, write_setting
from evaluation.datasets import DatasetError, LabelledRow, load_rows, per_label_sample, stratified_sample
from evaluation.judge_eval import ScorerResult
from evaluation.metrics import ConfusionMatrix, confusion_at, roc_auc
from evaluation.reviewed import HELD_OUT_SHARE, ReviewedDataError, ReviewedRows, require_enough, reviewed_rows
from service.conscience.thresholds import SHIPPED_PATH, ThresholdTable, load_thresholds
from service.settings import JudgeStyle, Settings
from service.store.db import Database

PROBE_VARIABLE = "CONSCIENCE_PROBE_PATH"


@dataclass(frozen=True)
class GivenRows(runs.DataChoice):
    """A data choice whose rows are given (reviewed records and data files), not read from `path`."""

    given: tuple[LabelledRow, ...] = ()

    def rows(self) -> list[LabelledRow]:
        return list(self.given)


@dataclass(frozen=True)
class Inputs:
    """What one refit reads: the data files' rows and where its outputs go."""

    data: Sequence[Path]
    sample: int | None
    per_label: int | None
    seed: int
    target_fpr: float
    out: Path
    concurrency: int

    def data_rows(self) -> list[LabelledRow]:
        """Every data file's rows (ids prefixed by the file's stem when there are several),
        sampled as --sample / --per-label say."""
        if self.sample is not None and self.per_label is not None:
            raise ValueError("choose either --sample or --per-label, not both")
        rows: list[LabelledRow] = []
        for path in self.data:
            loaded = load_rows(path)
            rows += loaded if len(self.data) == 1 else [replace(row, id=f"{path.stem}:{row.id}") for row in loaded]
        if len({row.id for row in rows}) != len(rows):
            raise DatasetError("row ids repeat across the --data files (their stems are the same)")
        if self.per_label is not None:
            return per_label_sample(rows, self.per_label, self.seed)
        return rows if self.sample is None else stratified_sample(rows, self.sample, self.seed)


async def read_reviewed(
    settings: Settings, frameworks: Sequence[str | None], seed: int
) -> dict[str | None, ReviewedRows]:
    """Each framework's reviewed rows (None: every framework's), from the configured database."""
    db = Database(settings.store.db_url)
    try:
        return {name: await reviewed_rows(db, framework=name, seed=seed) for name in frameworks}
    except (SQLAlchemyError, OSError) as exc:
        where = make_url(settings.store.db_url).render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ReviewedDataError(
            f"cannot read the reviewed records from {where}: {reason} (is it the proxy's database, and has "
            "`conscience db upgrade` been run?)"
        ) from None
    finally:
        await db.dispose()


def _joined(reviewed: ReviewedRows, data_rows: Sequence[LabelledRow]) -> list[LabelledRow]:
    clash = {row.id for row in reviewed.all} & {row.id for row in data_rows}
    if clash:
        raise DatasetError(f"data row id {sorted(clash)[0]!r} is a reviewed record's id; rename it")
    return [*reviewed.fit, *data_rows]


def write_fit_rows(path: Path, rows: Sequence[LabelledRow]) -> Path:
    """The rows a refit is fitted on, as a data file (JSONL, owner-only: they hold traffic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as sink:
        for row in rows:
            sink.write(json.dumps({"id": row.id, "prompt": row.prompt, "completion": row.completion,
                                   "label": row.label}) + "\n")
    return path


@dataclass(frozen=True)
class HeldOut:
    """One judge's figures on the held-out reviews (None: it gave no verdict on any)."""

    threshold: float | None
    confusion: ConfusionMatrix | None
    failed: int
    missing: str = "the judge failed on every one"  # why there are no figures

    @classmethod
    def measure(cls, result: ScorerResult | None, rows: Sequence[LabelledRow], threshold: float | None) -> HeldOut:
        scored = [row for row in rows if result is not None and row.id in result.scores]
        if result is None or threshold is None or not scored:
            return cls(threshold, None, len(rows) - len(scored))
        truth = [row.should_flag for row in scored]
        scores = [result.scores[row.id] for row in scored]
        return cls(threshold, confusion_at(truth, scores, threshold), len(rows) - len(scored))

    def as_json(self) -> dict[str, Any] | None:
        if self.confusion is None:
            return None
        return {"threshold": self.threshold, "failed": self.failed, **self.confusion.as_dict()}

    def line(self, label: str) -> str:
        if self.confusion is None:
            return f"  {label:<20} {'none':>9}  (no verdict on the held-out reviews: {self.missing})"
        c = self.confusion
        failed = f"  ({self.failed} without a verdict)" if self.failed else ""
        return (
            f"  {label:<20} {self.threshold:>9.4f}  {c.recall:>6.3f}  {c.false_positive_rate:>5.3f}  {c.f1:>5.3f}  "
            f"{c.true_positives:>3} {c.false_positives:>3} {c.true_negatives:>3} {c.false_negatives:>3}{failed}"
        )


HEADER = f"  {'held-out reviews':<20} {'threshold':>9}  {'recall':>6}  {'FPR':>5}  {'F1':>5}   TP  FP  TN  FN"


def _describe(name: str, reviewed: ReviewedRows, data_rows: int, data: Sequence[Path]) -> str:
    unethical, ethical = ReviewedRows.counts(reviewed.all)
    held_unethical, held_ethical = ReviewedRows.counts(reviewed.held_out)
    prompts = len({row.prompt for row in reviewed.held_out})
    files = ", ".join(path.name for path in data)
    return (
        f"{name}: {len(reviewed.all)} reviewed rows ({unethical} unethical, {ethical} ethical); fitted on "
        f"{len(reviewed.fit)} of them + {data_rows} rows of {files}; held out {len(reviewed.held_out)} "
        f"({held_unethical} unethical, {held_ethical} ethical; {prompts} prompts)"
    )


def _reviewed_figures(
    reviewed: ReviewedRows, data_rows: int, inputs: Inputs, before: HeldOut, after: HeldOut
) -> dict[str, Any]:
    return {
        "fit_rows": len(reviewed.fit), "data_rows": data_rows, "data": [path.name for path in inputs.data],
        "held_out_rows": len(reviewed.held_out), "held_out_share": HELD_OUT_SHARE, "seed": inputs.seed,
        "before": before.as_json(), "after": after.as_json(),
    }


async def refit_thresholds(
    settings: Settings, inputs: Inputs, *, frameworks: Sequence[str], style: JudgeStyle,
    thresholds_out: Path, env_file: Path, console: Console,
) -> str:
    """Each framework's threshold refitted on its reviewed rows plus the data rows; written into
    the thresholds file (the settings file pointed at it); the report's text."""
    runs.chosen_frameworks(settings, frameworks)  # an unknown name is refused before any work
    reviewed = await read_reviewed(settings, frameworks, inputs.seed)
    for name in frameworks:
        require_enough(reviewed[name], what=name)
    data_rows = inputs.data_rows()
    fit_rows = {name: _joined(reviewed[name], data_rows) for name in frameworks}
    every = {row.id: row for name in frameworks for row in [*fit_rows[name], *reviewed[name].held_out]}
    choice = GivenRows(inputs.data[0], seed=inputs.seed, given=tuple(every.values()))
    results, meta = await runs.judge_results(
        settings, choice, runs.RunOptions(inputs.out, frameworks, (style,), inputs.concurrency), console,
        baseline=False,
    )
    judge_model = meta["judge_model"]
    table = load_thresholds(thresholds_out) if thresholds_out.is_file() else ThresholdTable()
    lines = []
    for name, result in zip(frameworks, results, strict=True):
        fit_ids = {row.id for row in fit_rows[name]}
        scores = {row_id: score for row_id, score in result.scores.items() if row_id in fit_ids}
        truth = {row.id: row.should_flag for row in fit_rows[name]}
        fit_result = replace(
            result, scores=scores, failed=sum(1 for row in fit_rows[name] if row.is_scored) - len(scores),
            roc_auc=roc_auc([truth[row_id] for row_id in scores], list(scores.values())),
        )
        fit_path = write_fit_rows(inputs.out / f"reviewed_fit_{name}.jsonl", fit_rows[name])
        entry = calibrated_threshold(fit_result, fit_rows[name], target_fpr=inputs.target_fpr, data=fit_path)
        held_out = reviewed[name].held_out
        before = HeldOut.measure(result, held_out, result.threshold)
        after = HeldOut.measure(result, held_out, entry.threshold)
        reviewed_figures = _reviewed_figures(reviewed[name], len(data_rows), inputs, before, after)
        figures = {**entry.figures, "reviewed": reviewed_figures}
        table = table.with_entry(judge_model, style.value, name, replace(entry, figures=figures))
        lines += [
            f"{_describe(f'{name} ({style.value}, {judge_model})', reviewed[name], len(data_rows), inputs.data)}",
            HEADER, before.line("before (configured)"), after.line("after (refitted)"),
        ]
    table.save(thresholds_out)
    shipped = thresholds_out.resolve() == SHIPPED_PATH.resolve()
    if not shipped:  # the shipped file is the default already
        write_setting(env_file, THRESHOLDS_VARIABLE, str(thresholds_out))
    lines.append(f"written to {thresholds_out}" + ("" if shipped else f"; {env_file} points at it"))
    return "\n".join(lines)


async def refit_probe(
    settings: Settings, inputs: Inputs, *, probe_out: Path, env_file: Path, console: Console
) -> str:
    """A probe for the local model refitted on every reviewed row plus the data rows, measured
    beside the configured probe on the held-out reviews; written to `probe_out` (the settings
    file pointed at it); the report's text."""
    from evaluation.probe_calibrate import calibrate_probe
    from service.backends.local.demo import ensure_demo_model
    from service.backends.local.loader import load_model

    reviewed = (await read_reviewed(settings, [None], inputs.seed))[None]
    require_enough(reviewed, what="the latent probe")
    data_rows = inputs.data_rows()
    fit_rows = _joined(reviewed, data_rows)
    fit_path = write_fit_rows(inputs.out / "reviewed_fit_latent.jsonl", fit_rows)
    loaded = load_model(
        settings.local.model or str(ensure_demo_model(settings)),
        cache_dir=settings.local.model_cache_dir, device=settings.local.device, dtype=settings.local.dtype,
    )
    console.print(f"hidden states of {len(fit_rows)} rows, then the fit")
    probe = calibrate_probe(
        loaded=loaded, rows=fit_rows, data_path=fit_path, model_name=loaded.served_name,
        target_fpr=inputs.target_fpr, seed=inputs.seed,
    )
    del loaded
    gc.collect()
    # The new probe is measured from a staging file: the configured one (perhaps `probe_out`
    # itself, from an earlier refit) is measured first, unchanged.
    staged = inputs.out / "reviewed_probe.json"
    probe.save(staged)
    held_out = GivenRows(inputs.data[0], seed=inputs.seed, given=tuple(reviewed.held_out))
    options = runs.RunOptions(inputs.out, (), (JudgeStyle.LATENT,), inputs.concurrency)
    measured = []
    for chosen in (settings, settings.updated({"judge.probe_path": staged})):
        try:
            [result], _ = await runs.judge_results(chosen, held_out, options, console, baseline=False)
        except EvaluationSetupError:  # no probe is configured for this model: nothing to measure before
            measured.append(replace(HeldOut.measure(None, reviewed.held_out, None),
                                    missing="no probe is configured for this model"))
            continue
        measured.append(HeldOut.measure(result, reviewed.held_out, result.threshold if result.rows else None))
    before, after = measured
    probe = replace(probe, figures={**probe.figures, "reviewed": _reviewed_figures(
        reviewed, len(data_rows), inputs, before, after)})
    probe.save(probe_out)
    staged.unlink(missing_ok=True)
    write_setting(env_file, PROBE_VARIABLE, str(probe_out))
    return "\n".join([
        _describe(f"latent ({probe.model_name})", reviewed, len(data_rows), inputs.data),
        HEADER, before.line("before (configured)"), after.line("after (refitted)"),
        f"probe written to {probe_out}; {env_file} points at it",
    ])



@dataclass(frozen=True)
class Request:
    """`calibrate --reviewed` as the command line gave it."""

    inputs: Inputs
    frameworks: Sequence[str]
    style: JudgeStyle | None
    thresholds_out: Path | None
    env_file: Path
    probe: bool
    probe_out: Path
    probe_layers: str | None


def calibrate_reviewed(settings: Settings, request: Request, console: Console) -> None:
    """`conscience calibrate --reviewed [--probe]`: refit, print before/after, write. Settings
    the operator must fix are one line and exit 2; a refit that cannot be made (too few reviews,
    unreadable data or database) one red line and exit 1."""
    import asyncio

    import typer

    from evaluation.backends import EvaluationSetupError
    from evaluation.calibrate import CalibrationError
    from service.commands.errors import fail, require_extra
    from service.conscience.thresholds import ThresholdsError
    from service.core.backend import BackendError
    from service.frameworks import FrameworkError
    from service.settings import BackendKind

    errors: tuple[type[BaseException], ...] = (
        ReviewedDataError, DatasetError, CalibrationError, ThresholdsError, EvaluationSetupError, FrameworkError,
        BackendError, OSError, ValueError,
    )
    if request.probe:
        if request.probe_layers is not None:
            fail("--probe-layers does not combine with --reviewed: the refit chooses among every layer")
        require_extra("local", "conscience calibrate --reviewed --probe")
        if settings.serving.backend is not BackendKind.LOCAL:
            fail("--reviewed --probe refits the probe on the local model's hidden states: use --backend local "
                 "(and --local-model, or the demo model)")
        from service.backends.local.demo import DemoModelError
        from service.backends.local.loader import ModelLoadError

        errors += (DemoModelError, ModelLoadError)
        action = refit_probe(settings, request.inputs, probe_out=request.probe_out, env_file=request.env_file,
                             console=console)
    else:
        style = request.style or settings.judge.style
        if style is JudgeStyle.LATENT:
            fail("a latent judge's threshold is part of its probe: refit the probe with `conscience calibrate "
                 "--reviewed --probe`")
        frameworks = list(dict.fromkeys(request.frameworks or [settings.policy.framework]))
        thresholds_out = request.thresholds_out or settings.judge.thresholds_path or Path("thresholds.json")
        action = refit_thresholds(settings, request.inputs, frameworks=frameworks, style=style,
                                  thresholds_out=thresholds_out, env_file=request.env_file, console=console)
    try:
        report = asyncio.run(action)
    except errors as exc:  # one line, never wrapped: the reason is the whole message
        fail(" ".join(str(getattr(exc, "message", None) or exc).split()), code=1)
    typer.echo(report)
    if not request.probe and "threshold" in settings.judge.model_fields_set:
        console.print(
            "[yellow]warning:[/yellow] CONSCIENCE_THRESHOLD / --threshold is set: it overrides calibrated "
            "thresholds; unset it for the proxy to use them"
        )
