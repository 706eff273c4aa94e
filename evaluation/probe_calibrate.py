"""`conscience calibrate --probe`: fit a latent probe for the served (local) model.

The frozen model reads each labelled row as the ordinary chat (the prompt as the user turn, the
completion as the assistant turn; service/backends/local/hidden_states.py), once, with every
layer's hidden state pooled every way. Candidates are layer sets: each single layer, and sets of
layers whose pooled states are concatenated (by default one: the layers at 1/2, 2/3 and 5/6 of
the depth, what the demo model's shipped probe reads: as broad as one layer on BeaverTails, a
little better on XSTest; bench/results/judge_study).
For each layer set × pooling × L2 strength a class-balanced
logistic regression (service/conscience/probe_fit.py) is cross-validated in folds grouped by
prompt (the same prompt never on both sides) and stratified by label; the best out-of-fold ROC
AUC is chosen (ties: the higher recall at the target FPR). The final probe is fitted on every
row; its threshold is the one that keeps the out-of-fold false-positive rate at or below the
target. The artefact records the model's fingerprint, layer, pooling, weights, threshold, the
data file's sha256 and the cross-validated figures. Needs numpy and torch: the [local] and
[eval] extras.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evaluation.datasets import LabelledRow
from service.conscience.probe import POOLINGS, Probe

DEFAULT_MAX_ANSWER_TOKENS = 384  # as service/backends/local/hidden_states.py (imported with torch)


class ProbeCalibrationError(ValueError):
    """The data cannot give a probe (too few rows of a label, too few prompts for the folds)."""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def features_of(
    loaded: Any, rows: Sequence[LabelledRow], *, max_answer_tokens: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """{pooling: float64 array [rows, layers, hidden]} from one forward pass per row (every
    pooling of service/conscience/probe.POOLINGS)."""
    import numpy as np

    from service.backends.local.hidden_states import pooled_hidden_states

    per_pooling: dict[str, list[Any]] = {pooling: [] for pooling in POOLINGS}
    loaded.model.eval()
    for number, row in enumerate(rows, 1):
        pooled = pooled_hidden_states(
            loaded, [{"role": "user", "content": row.prompt}], row.completion,
            poolings=POOLINGS, max_answer_tokens=max_answer_tokens,
        )
        for pooling in POOLINGS:
            per_pooling[pooling].append(pooled[pooling].numpy())
        if progress is not None:
            progress(number, len(rows))
    return {pooling: np.asarray(arrays, dtype=np.float64) for pooling, arrays in per_pooling.items()}


def default_layer_sets(final_layer: int) -> list[tuple[int, ...]]:
    """Every single layer 0..final_layer, and the set at 1/2, 2/3 and 5/6 of the depth."""
    spread = tuple(sorted({round(final_layer * f) for f in (1 / 2, 2 / 3, 5 / 6)}))
    singles = [(layer,) for layer in range(final_layer + 1)]
    return singles + ([spread] if len(spread) > 1 else [])


def _concatenated(x_all: Any, layer_set: tuple[int, ...]) -> Any:
    """[rows, layers, hidden] -> [rows, len(layer_set) * hidden], layers in `layer_set`'s order."""
    import numpy as np

    return np.concatenate([x_all[:, layer, :] for layer in layer_set], axis=1)


def choose_and_fit(
    features: dict[str, Any],
    labels: Sequence[int],
    groups: Sequence[str],
    *,
    layer_sets: Sequence[tuple[int, ...]] | None = None,
    l2s: Sequence[float] | None = None,
    target_fpr: float = 0.05,
    folds: int = 5,
    seed: int = 0,
) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """(chosen {layers, pooling, l2}, the probe fitted on all rows, figures incl. the grid).
    `layer_sets`: the candidates (default: every single layer and `default_layer_sets`'s set)."""
    import numpy as np

    from service.conscience.probe_fit import (
        DEFAULT_L2,
        figures,
        fit_logistic,
        grouped_stratified_folds,
        out_of_fold_scores,
    )

    y = np.asarray(labels, dtype=np.float64)
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if min(positives, negatives) < 2:
        raise ProbeCalibrationError(
            f"a probe needs at least two rows of each class (unethical: {positives}, ethical: {negatives})"
        )
    k = min(folds, len(set(groups)), positives, negatives)
    if k < 2:
        raise ProbeCalibrationError("cross-validation needs at least two prompts and two rows per class")
    fold_of = grouped_stratified_folds(list(groups), [int(v) for v in labels], k=k, seed=seed)
    if any(len(set(y[fold_of == f])) < 2 or len(set(y[fold_of != f])) < 2 for f in range(k)):
        raise ProbeCalibrationError("the folds grouped by prompt leave a fold with one class only; add rows")
    first = next(iter(features.values()))
    candidates = default_layer_sets(first.shape[1] - 1) if layer_sets is None else [tuple(s) for s in layer_sets]
    for layer_set in candidates:
        if not layer_set or not all(0 <= layer < first.shape[1] for layer in layer_set):
            raise ProbeCalibrationError(f"layers {layer_set} are not in 0..{first.shape[1] - 1}")
    grid: list[dict[str, Any]] = []
    best: tuple[tuple[float, float], dict[str, Any], float] | None = None
    for pooling, x_all in features.items():
        for layer_set in candidates:
            if pooling == "mean_all_l2" and len(layer_set) > 1:
                continue  # an embeddings endpoint's vector: one (the final) layer
            x = _concatenated(x_all, layer_set)
            for l2 in l2s or DEFAULT_L2:
                oof = out_of_fold_scores(x, y, fold_of, l2=l2)
                figs = figures(oof.tolist(), [int(v) for v in labels], target_fpr)
                rounded = {name: round(float(value), 4) for name, value in figs.items()}
                entry = {"layers": list(layer_set), "pooling": pooling, "l2": l2, **rounded}
                grid.append(entry)
                key = (figs["auc"], figs["recall"])
                if best is None or key > best[0]:
                    best = (key, entry, float(figs["threshold"]))
    assert best is not None
    _, chosen, threshold = best
    chosen_layers = tuple(chosen["layers"])
    final = fit_logistic(_concatenated(features[chosen["pooling"]], chosen_layers), y, l2=chosen["l2"])
    summary = {
        "cv": {name: chosen[name] for name in ("auc", "recall", "fpr", "threshold")},
        "folds": k,
        "rows": len(y),
        "positives": positives,
        "l2": chosen["l2"],
        "grid": grid,
    }
    return {"layers": chosen_layers, "pooling": chosen["pooling"], "l2": chosen["l2"],
            "threshold": threshold}, final, summary


def calibrate_probe(
    loaded: Any,
    rows: Sequence[LabelledRow],
    data_path: Path,
    *,
    model_name: str,
    layer_sets: Sequence[tuple[int, ...]] | None = None,
    target_fpr: float = 0.05,
    max_answer_tokens: int | None = DEFAULT_MAX_ANSWER_TOKENS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Probe:
    """The probe artefact for `loaded`, fitted on the scored (`ethical`/`unethical`) rows."""
    from service.backends.local.hidden_states import model_fingerprint
    from service.conscience.probe_fit import to_probe

    scored = [row for row in rows if row.is_scored]
    if not scored:
        raise ProbeCalibrationError(f"{data_path}: no ethical or unethical rows")
    feats = features_of(loaded, scored, max_answer_tokens=max_answer_tokens, progress=progress)
    labels = [int(row.should_flag) for row in scored]
    chosen, final, summary = choose_and_fit(
        feats, labels, [row.prompt for row in scored], layer_sets=layer_sets, target_fpr=target_fpr, seed=seed
    )
    return to_probe(
        final,
        model_fingerprint=model_fingerprint(loaded),
        layers=chosen["layers"],
        pooling=chosen["pooling"],
        threshold=min(1.0, max(0.0, chosen["threshold"])),
        target_fpr=target_fpr,
        data_sha256=file_sha256(data_path),
        max_answer_tokens=max_answer_tokens,
        model_name=model_name,
        figures=summary,
    )
