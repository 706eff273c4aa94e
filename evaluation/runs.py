"""The evaluations end to end, from settings to report files: what the CLI commands run.

Each run opens the configured backend, does its work, writes `<name>.json` and `<name>.md`
(and charts) into the output directory, and returns the Markdown summary. Judge scores go to
`scores.jsonl` in the same directory as they come in, so an interrupted run resumes. A run
judges in the styles asked for, else in the one the proxy would serve with (`judged_styles`);
`eval judge` takes several data files and reports each apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from evaluation import charts, report
from evaluation.backends import (
    EvaluatedModels,
    EvaluationSetupError,
    evaluated_models,
    open_backend,
    rating_judge_backend,
)
from evaluation.baseline import BaselineScorer
from evaluation.datasets import DatasetError, LabelledRow, load_rows, per_label_sample, stratified_sample
from evaluation.judge_eval import ScorerResult, evaluate_judges
from evaluation.metrics import INTERVAL_METHODS, INTERVALS_NOTE
from evaluation.misalignment import (
    RatingJudge,
    SamplingPlan,
    answers_json,
    evaluate_misalignment,
    load_question_set,
    summarise,
)
from evaluation.repair_eval import RepairSetup, evaluate_repairs, readable_repairs, summarise_repairs
from evaluation.score_log import ScoreLog
from evaluation.scorers import AnswerScorer, FrameworkScorer
from evaluation.settings import EvaluationSettings
from service.conscience.judge import Judge
from service.conscience.policy import JudgeStyleError, JudgeStyles
from service.conscience.stack import ConscienceKnobs, build_judge, build_reviewer
from service.core.backend import Backend
from service.frameworks import Framework, FrameworkError, load_frameworks
from service.settings import JudgeStyle, Settings

SCORE_LOG = "scores.jsonl"


@dataclass(frozen=True)
class DataChoice:
    path: Path
    sample: int | None = None  # a stratified sample of this many rows; None: every row
    seed: int = 0
    per_label: int | None = None  # at most this many rows of each label (a balanced sample)

    def rows(self) -> list[LabelledRow]:
        if self.sample is not None and self.per_label is not None:
            raise ValueError("choose either --sample or --per-label, not both")
        rows = load_rows(self.path)
        if self.per_label is not None:
            return per_label_sample(rows, self.per_label, self.seed)
        return rows if self.sample is None else stratified_sample(rows, self.sample, self.seed)

    def describe(self, rows: int) -> str:
        if self.per_label is not None:
            return f"a seeded sample of at most {self.per_label} rows per label ({rows} rows)"
        return f"a stratified sample of {rows} rows" if self.sample else f"{rows} rows"

    def as_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "sample": self.sample, "per_label": self.per_label, "seed": self.seed}


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    frameworks: Sequence[str] = ()  # empty: every framework
    # Empty: the style the proxy would serve with the same settings (`judged_styles`).
    styles: Sequence[JudgeStyle] = ()
    concurrency: int = 1


def judged_styles(
    settings: Settings, backend: Backend, judge: Judge, requested: Sequence[JudgeStyle]
) -> list[JudgeStyle]:
    """The styles a run judges in: those asked for (--style), else the one the proxy serves with
    these settings and this backend. `JudgeStyles.serving` (service/conscience/policy.py) decides that for the
    proxy and for every evaluation alike: with CONSCIENCE_JUDGE_STYLE unset, a backend holding a
    probe for its model (the demo model's ships) judges `latent`, any other `fast`. A latent
    verdict needs a probe."""
    try:
        styles = list(dict.fromkeys(requested)) or [
            JudgeStyles.serving(settings, getattr(backend, "probe", None)).served
        ]
    except JudgeStyleError as exc:
        raise EvaluationSetupError(str(exc)) from None
    if JudgeStyle.LATENT in styles and judge.probe is None:
        raise EvaluationSetupError(
            "--style latent needs a probe for the served model: set --probe-path to one "
            "(`conscience calibrate --probe` fits it), or --embeddings-model upstream"
        )
    return styles


def framework_scorers(
    judge: Judge, styles: Sequence[JudgeStyle], frameworks: Sequence[Framework], judge_model: str
) -> list[FrameworkScorer]:
    """One scorer per style and framework; a latent verdict reads no framework: one."""
    scorers = []
    for style in dict.fromkeys(styles):
        chosen = frameworks[:1] if style is JudgeStyle.LATENT else frameworks
        scorers += [FrameworkScorer(judge, framework, judge_model=judge_model, style=style) for framework in chosen]
    return scorers


def _style_note(styles: str, served: bool) -> str:
    """How a report names the verdict style(s), and whether the proxy's own default chose them."""
    return f"{styles} verdict" + (" (the style the proxy serves with these settings)" if served else "")


class Reporter:
    """Progress lines on stderr, at most one per `every` rows; `prefix` names the data file."""

    def __init__(self, console: Console, every: int = 25, prefix: str = "") -> None:
        self._console = console
        self._every = every
        self._prefix = prefix

    def __call__(self, name: str, done: int, total: int) -> None:
        if done == total or done % self._every == 0:
            self._console.print(f"{self._prefix}{name}: {done}/{total}")


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[tuple[Backend, EvaluatedModels]]:
    backend = await open_backend(settings)
    try:
        await backend.check_ready()
        yield backend, await evaluated_models(settings, backend)
    finally:
        await backend.aclose()


def chosen_frameworks(settings: Settings, names: Sequence[str]) -> list[Framework]:
    available = load_frameworks(settings.policy.frameworks_dir)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise FrameworkError(f"unknown framework(s) {unknown}; known: {sorted(available)}")
    return [available[name] for name in (names or sorted(available))]


def _meta(settings: Settings, names: EvaluatedModels, data: DataChoice, rows: int) -> dict[str, Any]:
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": settings.serving.backend.value,
        "judge_model": names.judge,
        "data": data.as_json(),
        "rows": rows,
        "threshold": settings.judge.threshold,
    }


@dataclass(frozen=True)
class FileResults:
    """One data file's rows and every judge's result on them."""

    data: DataChoice
    rows: int  # the rows chosen from the file (ambiguous ones included)
    results: list[ScorerResult]

    def as_json(self) -> dict[str, Any]:
        return {"file": self.data.path.name, "data": self.data.as_json(), "rows": self.rows,
                "results": [result.as_json() for result in self.results]}


def _chosen_rows(choices: Sequence[DataChoice]) -> list[tuple[DataChoice, list[LabelledRow]]]:
    """Every file's rows, read before any model is loaded. Scores are logged per file name
    (evaluation/score_log.py), so two files of one run may not share one."""
    names = [choice.path.name for choice in choices]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DatasetError(f"two --data files are named {', '.join(twice)}: scores are kept per file name")
    return [(choice, choice.rows()) for choice in choices]


async def judge_results_by_file(
    settings: Settings, choices: Sequence[DataChoice], options: RunOptions, console: Console, *, baseline: bool
) -> tuple[list[FileResults], dict[str, Any]]:
    """Each file's rows scored once by every judge (style x framework, and the baseline) and
    summarised per file; one backend for them all."""
    loaded = _chosen_rows(choices)
    frameworks = chosen_frameworks(settings, options.frameworks)
    async with opened(settings) as (backend, names):
        judge = build_judge(backend, ConscienceKnobs.from_settings(settings))
        styles = judged_styles(settings, backend, judge, options.styles)
        scorers: list[AnswerScorer] = [*framework_scorers(judge, styles, frameworks, names.judge)]
        if baseline:
            scorers.append(BaselineScorer(
                backend, judge_model=names.judge, max_answer_chars=settings.judge.max_answer_chars,
                threshold=settings.judge.threshold,
            ))
        log = ScoreLog(options.out_dir / SCORE_LOG)
        files = []
        for choice, rows in loaded:
            progress = Reporter(console, prefix=f"{choice.path.name}: " if len(loaded) > 1 else "")
            results = await evaluate_judges(
                scorers, rows, log=log, concurrency=options.concurrency, progress=progress,
            )
            files.append(FileResults(choice, len(rows), results))
    meta = {
        **_meta(settings, names, loaded[0][0], sum(len(rows) for _, rows in loaded)),
        "data": [choice.as_json() for choice, _ in loaded],  # every file, not the first alone
        "style": ", ".join(style.value for style in styles),
        "style_from": "--style" if options.styles else "served",
        "intervals_95": INTERVAL_METHODS,
    }
    return files, meta


async def judge_results(
    settings: Settings, data: DataChoice, options: RunOptions, console: Console, *, baseline: bool
) -> tuple[list[ScorerResult], dict[str, Any]]:
    """`judge_results_by_file` on one file (calibrate)."""
    files, meta = await judge_results_by_file(settings, [data], options, console, baseline=baseline)
    return files[0].results, meta


def _roc_chart_path(out_dir: Path, file: FileResults, files: int) -> Path:
    """`judge_roc.png` for one data file; `judge_roc_<file stem>.png` each for several."""
    return out_dir / ("judge_roc.png" if files == 1 else f"judge_roc_{file.data.path.stem}.png")


async def run_judge_eval(
    settings: Settings, data: Sequence[DataChoice], options: RunOptions, console: Console, *, baseline: bool
) -> str:
    """`eval judge`: per data file, every judge's figures at its threshold with 95 % intervals."""
    files, meta = await judge_results_by_file(settings, data, options, console, baseline=baseline)
    report.write_json(options.out_dir / "judge.json", {"meta": meta, "files": [file.as_json() for file in files]})
    sections = []
    for file in files:
        charts.roc_chart(
            file.results, _roc_chart_path(options.out_dir, file, len(files)),
            f"Judge ROC ({meta['judge_model']}, {file.data.path.name})",
        )
        sections.append(
            f"### `{file.data.path.name}`: {file.data.describe(file.rows)} (ambiguous rows left out)\n\n"
            f"{report.judge_table(file.results)}\n"
        )
    summary = (
        f"## Judge evaluation\n\nJudge model: `{meta['judge_model']}`, "
        f"{_style_note(meta['style'], meta['style_from'] == 'served')}. "
        f"Each judge's figures at the threshold it flags at; {INTERVALS_NOTE}.\n\n" + "\n".join(sections)
    )
    report.write_text(options.out_dir / "judge.md", summary)
    return summary


async def run_repair_eval(
    settings: Settings, data: DataChoice, options: RunOptions, console: Console, *, limit: int | None
) -> str:
    rows = data.rows()
    frameworks = chosen_frameworks(settings, options.frameworks)
    async with opened(settings) as (backend, names):
        knobs = ConscienceKnobs.from_settings(settings)
        judge = build_judge(backend, knobs)
        styles = judged_styles(settings, backend, judge, options.styles[:1])
        setup = RepairSetup(
            judge=judge,
            reviewer=build_reviewer(backend, knobs),
            judge_model=names.judge,
            max_repairs=settings.repair.max_attempts,
            style=styles[0],
            concurrency=options.concurrency,
        )
        log = ScoreLog(options.out_dir / SCORE_LOG)
        summaries = [
            summarise_repairs(
                framework.name,
                await evaluate_repairs(
                    setup, framework, rows, limit=limit, log=log, progress=Reporter(console)
                ),
            )
            for framework in frameworks
        ]
    meta = {**_meta(settings, names, data, len(rows)), "limit": limit, "style": setup.style.value,
            "style_from": "--style" if options.styles else "served"}
    report.write_json(options.out_dir / "repair.json", {"meta": meta, "frameworks": summaries})
    report.write_text(options.out_dir / "repaired_answers.md", readable_repairs(summaries))
    summary = (
        f"## Repair evaluation\n\nData: `{data.path.name}` ({len(rows)} rows); every flagged row"
        f"{f' (at most {limit} per framework)' if limit else ''} through the proxy's repair loop: up to "
        f"{settings.repair.max_attempts} rounds of {settings.repair.candidates} candidates drafted from the request "
        f"alone (strategy `{settings.repair.strategy.value}`), near-copies at "
        f"{settings.repair.max_overlap:g} word 3-gram overlap. "
        f"Judge and repairer: `{names.judge}`, {_style_note(setup.style.value, not options.styles)}.\n\n"
        f"{report.repair_table(summaries)}\n"
    )
    report.write_text(options.out_dir / "repair.md", summary)
    return summary


async def run_misalignment_eval(
    settings: EvaluationSettings, plan: SamplingPlan, out_dir: Path, console: Console,
    *, questions_file: Path | None = None, label: str | None = None,
) -> str:
    questions = load_question_set(questions_file) if questions_file else load_question_set()
    async with opened(settings) as (backend, names):
        judge_backend, judge_model, owned = rating_judge_backend(settings, backend, names)
        try:
            answers = await evaluate_misalignment(
                backend, names.policy,
                RatingJudge(judge_backend, judge_model, questions, settings.judge.max_answer_chars),
                questions, plan,
                progress=lambda done, total: Reporter(console, every=10)("answers", done, total),
            )
        finally:
            if owned:
                await judge_backend.aclose()
    summary = summarise(answers)
    name = label or names.policy
    report.write_json(
        out_dir / "misalignment.json",
        {
            "meta": {"policy_model": names.policy, "judge_model": judge_model, "plan": asdict(plan),
                     "max_rating": questions.max_rating},
            "summary": asdict(summary),
            "answers": answers_json(answers),
        },
    )
    charts.misalignment_chart({name: summary}, out_dir / "misalignment.png", "Misaligned answers")
    text = (
        f"## Misalignment evaluation\n\nPolicy `{names.policy}`, judge `{judge_model}`; "
        f"{len(questions.questions)} questions × {plan.samples} samples at temperature "
        f"{plan.temperature}.\n\n{report.misalignment_table({name: summary})}\n\n"
        f"{report.per_question_table(summary)}\n"
    )
    report.write_text(out_dir / "misalignment.md", text)
    return text


async def run_adversarial_eval(
    settings: Settings, data: DataChoice, options: RunOptions, console: Console,
    *, framings: Sequence[str] = (), ethical: bool = True,
) -> str:
    """`eval adversarial`: each framing's flag rate on the harmful rows against the plain rows,
    per style (`options.styles`; empty: the style the proxy would judge with) and framework
    (`options.frameworks`; empty: the configured one)."""
    from evaluation.adversarial import (
        MAX_DROP_POINTS,
        AdversarialSetup,
        chosen_framings,
        evaluate_adversarial,
        load_framings,
    )
    from service.settings import FailurePolicy

    chosen = chosen_framings(load_framings(), framings)
    every = data.rows()
    rows = [row for row in every if row.label == "unethical" or (ethical and row.label == "ethical")]
    if not any(row.label == "unethical" for row in rows):
        raise ValueError(f"{data.path}: no rows labelled unethical to frame")
    frameworks = chosen_frameworks(settings, options.frameworks or (settings.policy.framework,))
    async with opened(settings) as (backend, names):
        judge = build_judge(backend, ConscienceKnobs.from_settings(settings))
        styles = judged_styles(settings, backend, judge, options.styles)
        setup = AdversarialSetup(
            judge=judge, judge_model=names.judge,
            fail_closed=settings.policy.failure_policy is FailurePolicy.FAIL_CLOSED, concurrency=options.concurrency,
        )
        results = [result.as_json() for result in await evaluate_adversarial(
            setup, styles, frameworks, chosen, rows,
            log=ScoreLog(options.out_dir / SCORE_LOG), progress=Reporter(console),
        )]
    meta = {
        **_meta(settings, names, data, len(rows)),
        "styles": [style.value for style in dict.fromkeys(styles)],
        "frameworks": [framework.name for framework in frameworks],
        "framings": [{"id": f.id, "kind": f.kind, "description": f.description} for f in chosen],
        "failure_policy": settings.policy.failure_policy.value,
        "max_drop_points": MAX_DROP_POINTS,
    }
    report.write_json(options.out_dir / "adversarial.json", {"meta": meta, "results": results})
    harmful = sum(row.label == "unethical" for row in rows)
    verdicts = []
    for style, framework in dict.fromkeys((r["style"], r["framework"]) for r in results):
        framed = [r for r in results if (r["style"], r["framework"]) == (style, framework) and r["framing"] != "plain"]
        worst = max(framed, key=lambda r: r["drop_points"], default=None)
        name = style if framework is None else f"{style} · {framework}"
        if worst is not None:
            ok = all(r["within_10_points"] for r in framed)
            verdicts.append(
                f"- **{name}**: largest drop {worst['drop_points']:+.1f} points ({worst['framing']}); "
                f"{'every framing within' if ok else 'NOT within'} {MAX_DROP_POINTS:g} points."
            )
    summary = (
        f"## Adversarial prompting\n\nData: `{data.path.name}`, {data.describe(len(every))}; "
        f"{harmful} harmful (`unethical`) rows"
        f"{f' and {len(rows) - harmful} ethical rows' if ethical else ''} judged plain and under each "
        f"framing (evaluation/data/adversarial.yaml). Judge model: `{names.judge}`. Flag rate: the share "
        f"of harmful rows flagged at the judge's threshold for the style; drop: plain flag rate minus "
        f"framed, in points; ethical FPR: the share of ethical rows flagged. A failed verdict counts "
        f"as the failure policy ({settings.policy.failure_policy.value}) decides.\n\n"
        + ("\n".join(verdicts) + "\n\n" if verdicts else "")
        + f"{report.adversarial_tables(results)}\n"
    )
    report.write_text(options.out_dir / "adversarial.md", summary)
    return summary
