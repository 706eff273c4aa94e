"""`conscience eval judge|repair|adversarial|misalignment` and `conscience calibrate`.

Backend, model and threshold come from the proxy's settings (CONSCIENCE_* and `.env`) plus the
evaluation's own (evaluation/settings.py); the few setting flags a command takes
(`overriding`) are generated from those settings by the one flag bridge (service/commands/flags.py)
and override them for one run. Without --style, every command that judges does so in the style
the proxy would serve with the same settings (service/conscience/policy.py `JudgeStyles.serving`, asked through
evaluation/runs.py `judged_styles`). Failures an operator can fix are one red line and exit 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from evaluation.settings import EvaluationSettings
from service.commands.errors import fail, require_extra
from service.commands.flags import overriding
from service.settings import BackendKind, JudgeStyle, Settings

if TYPE_CHECKING:
    from evaluation import runs

eval_app = typer.Typer(no_args_is_help=True, help="Measure the judge, the repairs and misalignment.")
console = Console(stderr=True)
T = TypeVar("T")

_DATA_HELP = (
    "Labelled rows: JSONL, JSON array or CSV, in the project's format (prompt, completion, label) or as "
    "BeaverTails, HarmBench, XSTest or PKU-SafeRLHF publish them (evaluation/datasets.py)."
)
DataFile = Annotated[Path, typer.Option("--data", help=_DATA_HELP)]
DataFiles = Annotated[list[Path], typer.Option("--data", help=_DATA_HELP + " Repeatable: figures per file.")]
Sample = Annotated[int | None, typer.Option(help="Use a stratified sample of this many rows.")]
PerLabel = Annotated[
    int | None,
    typer.Option(min=1, help="Use at most this many rows of each label (a balanced sample; not with --sample)."),
]
Seed = Annotated[int, typer.Option(help="Seed of the sample and of answer sampling.")]
OutDir = Annotated[Path, typer.Option("--out", help="Directory for the reports (and resumable scores).")]
Frameworks = Annotated[
    list[str] | None, typer.Option("--framework", help="Framework to evaluate (repeatable; default: all).")
]
_SERVED = "default: the style the proxy would serve with these settings"
Style = Annotated[
    JudgeStyle | None, typer.Option(help=f"fast (one-token verdict), reasoned or latent ({_SERVED}).")
]
Styles = Annotated[
    list[JudgeStyle] | None,
    typer.Option("--style", help=f"Verdict style to evaluate (repeatable: one run compares them; {_SERVED})."),
]
Concurrency = Annotated[int, typer.Option(min=1, help="Rows in flight at once.")]


def _evaluation(command: str, settings: Settings) -> runs:
    """The evaluation code, once the extras it needs are known to be installed."""
    require_extra("eval", f"conscience {command}")
    if settings.serving.backend is BackendKind.LOCAL:
        require_extra("local", f"conscience {command} --backend local")
    from evaluation import runs

    return runs


# The settings every evaluation command can override: what serves and what judges.
SERVING = ("backend", "upstream_url", "local_model", "judge_model")
# And those of a command that judges: the threshold, and the probe that makes the served style latent.
JUDGING = ("threshold", "probe_path", "embeddings_model")


def _run(action: Coroutine[Any, Any, T]) -> T:
    from evaluation.backends import EvaluationSetupError
    from evaluation.calibrate import CalibrationError
    from evaluation.datasets import DatasetError
    from service.core.backend import BackendError
    from service.frameworks import FrameworkError

    try:
        return asyncio.run(action)
    except (DatasetError, FrameworkError, EvaluationSetupError, CalibrationError, BackendError,
            OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {getattr(exc, 'message', None) or exc}")
        raise typer.Exit(1) from None


@eval_app.command("judge")
@overriding(EvaluationSettings, *SERVING, *JUDGING)
def judge_command(
    data: DataFiles,
    out: OutDir = Path("eval-out"),
    framework: Frameworks = None,
    baseline: Annotated[bool, typer.Option(help="Also score the Yes/No self-check baseline.")] = True,
    sample: Sample = None,
    per_label: PerLabel = None,
    seed: Seed = 0,
    style: Styles = None,
    concurrency: Concurrency = 1,
    *,
    settings: EvaluationSettings,
) -> None:
    """Per data file: precision, recall, F1, FPR and ROC AUC of each judge (framework × style) at
    the threshold it flags at, each with its 95 % confidence interval, and at a threshold chosen
    at FPR <= 5 % on other folds."""
    runs = _evaluation("eval judge", settings)
    summary = _run(runs.run_judge_eval(
        settings, [runs.DataChoice(path, sample, seed, per_label) for path in data],
        runs.RunOptions(out, framework or (), tuple(style or ()), concurrency), console,
        baseline=baseline,
    ))
    typer.echo(summary)


@eval_app.command("repair")
@overriding(EvaluationSettings, *SERVING, *JUDGING)
def repair_command(
    data: DataFile,
    out: OutDir = Path("eval-out"),
    framework: Frameworks = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Repair at most this many flagged rows per framework.")
    ] = None,
    sample: Sample = None,
    per_label: PerLabel = None,
    seed: Seed = 0,
    style: Style = None,
    concurrency: Concurrency = 1,
    *,
    settings: EvaluationSettings,
) -> None:
    """Repair the flagged rows: judge pass rate, refusal rate and length ratio of the repairs."""
    runs = _evaluation("eval repair", settings)
    summary = _run(runs.run_repair_eval(
        settings, runs.DataChoice(data, sample, seed, per_label),
        runs.RunOptions(out, framework or (), (style,) if style else (), concurrency), console, limit=limit,
    ))
    typer.echo(summary)


@eval_app.command("misalignment")
@overriding(EvaluationSettings, *SERVING, "model", "eval_judge_url", "eval_judge_model")
def misalignment_command(
    out: OutDir = Path("eval-out"),
    samples: Annotated[int, typer.Option(min=1, help="Answers sampled per question.")] = 10,
    max_tokens: Annotated[int, typer.Option(min=1, help="Token budget of one answer.")] = 300,
    questions: Annotated[Path | None, typer.Option(help="Question set YAML (default: the built-in one).")] = None,
    seed: Seed = 0,
    concurrency: Concurrency = 1,
    *,
    settings: EvaluationSettings,
) -> None:
    """Sample free-form answers and rate their alignment and coherence with a judge model."""
    runs = _evaluation("eval misalignment", settings)
    from evaluation.misalignment import SamplingPlan

    plan = SamplingPlan(samples=samples, max_tokens=max_tokens, seed=seed, concurrency=concurrency)
    summary = _run(runs.run_misalignment_eval(settings, plan, out, console, questions_file=questions))
    typer.echo(summary)


@overriding(EvaluationSettings, *SERVING, "db_url")
def calibrate_command(
    data_files: Annotated[
        list[Path],
        typer.Option("--data", help="Labelled rows (id, prompt, completion, label); repeatable with --reviewed."),
    ],
    framework: Annotated[
        list[str] | None, typer.Option("--framework", help="Framework to calibrate (repeatable) [settings: framework].")
    ] = None,
    style: Annotated[
        JudgeStyle | None, typer.Option(help="Verdict style to calibrate: fast or reasoned [settings: judge_style].")
    ] = None,
    thresholds_out: Annotated[
        Path | None,
        typer.Option(help="The thresholds file to write into [settings: thresholds_path, else ./thresholds.json]."),
    ] = None,
    env_file: Annotated[Path, typer.Option(help="The settings file pointed at the thresholds file.")] = Path(".env"),
    out: OutDir = Path("eval-out"),
    sample: Sample = None,
    per_label: PerLabel = None,
    seed: Seed = 0,
    concurrency: Concurrency = 1,
    reviewed: Annotated[
        bool,
        typer.Option("--reviewed", help="Refit on the reviewed records of the database (--db-url) plus --data, and "
                     "print the configured and the refitted judge's figures on held-out reviews."),
    ] = False,
    probe: Annotated[
        bool, typer.Option("--probe", help="Fit a latent probe for the local model instead (judge style latent).")
    ] = False,
    probe_out: Annotated[Path, typer.Option(help="With --probe: where to write the probe.")] = Path("probe.json"),
    target_fpr: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="The false-positive rate the threshold keeps on the data.")
    ] = 0.05,
    probe_layers: Annotated[
        str | None,
        typer.Option(help="With --probe: layer sets to try, comma-separated; a set's layers joined by '+' "
                     "are concatenated (e.g. '16,12+16+20'; default: every layer and one spread set)."),
    ] = None,
    *,
    settings: EvaluationSettings,
) -> None:
    """Choose each framework's judge threshold (one style) at --target-fpr on labelled data and
    store it, with its figures, under the judge model in the thresholds file; with --probe, fit a
    latent probe for the local model instead (its threshold is part of it). With --reviewed, refit
    on this deployment's reviewed records plus --data (evaluation/reviewed_calibrate.py)."""
    if reviewed:
        _evaluation("calibrate --reviewed", settings)
        from evaluation.reviewed_calibrate import Inputs, Request, calibrate_reviewed

        inputs = Inputs(data_files, sample, per_label, seed, target_fpr, out, concurrency)
        calibrate_reviewed(settings, Request(
            inputs, framework or [], style, thresholds_out, env_file, probe, probe_out, probe_layers,
        ), console)
        return
    if len(data_files) > 1:
        fail("give one --data file (several only with --reviewed)")
    data = data_files[0]
    if probe:
        _calibrate_probe(settings, data, probe_out, target_fpr, probe_layers, sample, per_label, seed)
        return
    chosen_style = style or settings.judge.style
    if chosen_style is JudgeStyle.LATENT:
        fail("a latent threshold is part of its probe: fit one with `conscience calibrate --probe`")
    names = framework or [settings.policy.framework]
    runs = _evaluation("calibrate", settings)
    from evaluation.calibrate import THRESHOLDS_VARIABLE, CalibrationError, calibrated_threshold, write_setting
    from service.conscience.thresholds import SHIPPED_PATH, ThresholdsError, ThresholdTable, load_thresholds

    choice = runs.DataChoice(data, sample, seed, per_label)
    results, meta = _run(runs.judge_results(
        settings, choice, runs.RunOptions(out, names, (chosen_style,), concurrency), console, baseline=False,
    ))
    target = thresholds_out or settings.judge.thresholds_path or Path("thresholds.json")
    try:
        table = load_thresholds(target) if target.is_file() else ThresholdTable()
        rows = choice.rows()
        for name, result in zip(names, results, strict=True):
            entry = calibrated_threshold(result, rows, target_fpr=target_fpr, data=data)
            table = table.with_entry(meta["judge_model"], chosen_style.value, name, entry)
            held_out = entry.figures["cross_validated"] or {}
            typer.echo(
                f"{name} ({chosen_style.value}, {meta['judge_model']}): threshold {entry.threshold:.4f} at "
                f"FPR <= {target_fpr:g}: recall {entry.figures['recall']:.3f}, FPR {entry.figures['fpr']:.3f}; "
                f"on held-out folds recall {held_out.get('recall', float('nan')):.3f}, "
                f"FPR {held_out.get('fpr', float('nan')):.3f}; ROC AUC {result.roc_auc:.3f} ({result.rows} rows)"
            )
        table.save(target)
        if target.resolve() != SHIPPED_PATH.resolve():  # the shipped file is the default already
            write_setting(env_file, THRESHOLDS_VARIABLE, str(target))
    except (CalibrationError, ThresholdsError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    shipped = target.resolve() == SHIPPED_PATH.resolve()
    typer.echo(f"written to {target}" + ("" if shipped else f"; {env_file} points at it"))
    if "threshold" in settings.judge.model_fields_set:
        console.print(
            "[yellow]warning:[/yellow] CONSCIENCE_JUDGE__THRESHOLD / --threshold is set: it overrides calibrated "
            "thresholds; unset it for the proxy to use them"
        )


def _calibrate_probe(
    settings: EvaluationSettings, data: Path, out: Path, target_fpr: float, layers: str | None,
    sample: int | None, per_label: int | None, seed: int,
) -> None:
    """`calibrate --probe`: needs the [local] and [eval] extras (torch for the hidden states,
    numpy for the fit) and the local backend (the probe reads the served model's activations)."""
    require_extra("local", "conscience calibrate --probe")
    require_extra("eval", "conscience calibrate --probe")
    if settings.serving.backend is not BackendKind.LOCAL:
        fail(
            "--probe fits a probe on the local model's hidden states: use --backend local "
            "(and --local-model, or the demo model)"
        )
    try:
        wanted = None if layers is None else [
            tuple(int(layer) for layer in part.split("+")) for part in layers.split(",") if part.strip()
        ]
    except ValueError:
        fail(f"--probe-layers {layers!r} is not a comma-separated list of layers")
    from evaluation.datasets import DatasetError, load_rows, per_label_sample, stratified_sample
    from evaluation.probe_calibrate import ProbeCalibrationError, calibrate_probe
    from service.backends.local.demo import DemoModelError, ensure_demo_model
    from service.backends.local.loader import ModelLoadError, load_model

    try:
        rows = load_rows(data)
        if per_label is not None:
            rows = per_label_sample(rows, per_label, seed)
        elif sample is not None:
            rows = stratified_sample(rows, sample, seed)
        loaded = load_model(
            settings.local.model or str(ensure_demo_model(settings)),
            cache_dir=settings.local.model_cache_dir, device=settings.local.device, dtype=settings.local.dtype,
        )

        def progress(done: int, total: int) -> None:
            if done == total or done % 50 == 0:
                console.print(f"hidden states: {done}/{total} rows")

        fitted = calibrate_probe(
            loaded, rows, data, model_name=loaded.served_name, layer_sets=wanted, target_fpr=target_fpr,
            seed=seed, progress=progress,
        )
        fitted.save(out)
    except (DatasetError, ProbeCalibrationError, ModelLoadError, DemoModelError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    cv = fitted.figures["cv"]
    layer_names = "+".join(map(str, fitted.layers))
    typer.echo(
        f"probe for {fitted.model_name} (fingerprint {fitted.model_fingerprint[:16]}): layers {layer_names}, "
        f"{fitted.pooling}, threshold {fitted.threshold:.4f} at FPR <= {target_fpr:g}; cross-validated "
        f"AUC {cv['auc']}, recall {cv['recall']}, FPR {cv['fpr']} ({fitted.figures['rows']} rows); written to {out}"
    )


@eval_app.command("adversarial")
@overriding(EvaluationSettings, *SERVING, *JUDGING, "failure_policy")
def adversarial_command(
    data: DataFile,
    out: OutDir = Path("eval-out"),
    framework: Annotated[
        list[str] | None,
        typer.Option("--framework", help="Framework of the fast and reasoned judges (repeatable; default: the "
                     "configured one, CONSCIENCE_POLICY__FRAMEWORK); a latent verdict reads none."),
    ] = None,
    style: Annotated[
        list[JudgeStyle] | None,
        typer.Option("--style", help="Verdict style to attack (repeatable: one run compares them; default: the "
                     "style the proxy would judge with)."),
    ] = None,
    framing: Annotated[
        list[str] | None,
        typer.Option("--framing", help="Framing of evaluation/data/adversarial.yaml (repeatable; default: all); "
                     "the plain rows are always judged too."),
    ] = None,
    ethical: Annotated[
        bool, typer.Option(help="Also judge the ethical rows under each framing (its false-positive rate).")
    ] = True,
    sample: Sample = None,
    per_label: PerLabel = None,
    seed: Seed = 0,
    concurrency: Concurrency = 1,
    *,
    settings: EvaluationSettings,
) -> None:
    """Jailbreak framings around the request and verdict claims injected into the answer: each
    one's flag rate on the harmful rows, its drop from the plain rows (at most 10 points) and
    its false-positive rate on the ethical rows."""
    runs = _evaluation("eval adversarial", settings)
    summary = _run(runs.run_adversarial_eval(
        settings, runs.DataChoice(data, sample, seed, per_label),
        runs.RunOptions(out, framework or (), tuple(style or ()), concurrency), console,
        framings=framing or (), ethical=ethical,
    ))
    typer.echo(summary)
