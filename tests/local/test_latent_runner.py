"""The latent verdict's reused passes (service/backends/local/latent.py): the features of a
longer answer, another answer or a shorter one equal a full forward pass, while the model reads
only the tokens no kept pass covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.backends.local.hidden_states import answer_span, pooled_hidden_states
from service.backends.local.latent import LatentRunner
from service.backends.local.loader import LoadedModel, load_model

ASK = [{"role": "user", "content": "How do I bake bread?"}]
ANSWER = "Mix flour, water, salt and yeast; knead it for ten minutes, let it rise, then bake it for half an hour."
OTHER = "Buy a loaf at the bakery on the corner."
POOLINGS = ("mean_answer", "mean_all", "mean_all_l2")


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(tiny_model_dir), cache_dir=tmp_path_factory.mktemp("cache"))


def full_pass(loaded: LoadedModel, answer: str, layer: int, pooling: str) -> list[float]:
    pooled = pooled_hidden_states(loaded, ASK, answer, layers=[layer], poolings=[pooling], max_answer_tokens=None)
    return pooled[pooling][0].tolist()


def length(loaded: LoadedModel, answer: str) -> int:
    return len(answer_span(loaded.tokenizer, ASK, answer, max_answer_tokens=None).token_ids)


def run(runner: LatentRunner, answer: str, layer: int, pooling: str) -> list[float]:
    return runner.features(ASK, answer, layer=layer, pooling=pooling, max_answer_tokens=None)[0]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_a_growing_answer_reads_each_token_about_once_and_scores_as_a_full_pass(
    loaded: LoadedModel, pooling: str
) -> None:
    runner = LatentRunner(loaded)
    windows = [ANSWER[:end] for end in (12, 30, 57, len(ANSWER))]
    for window in windows:
        assert run(runner, window, 1, pooling) == pytest.approx(full_pass(loaded, window, 1, pooling), abs=1e-4)
    # Each window re-reads at most the token its cut split (BPE merges across the cut).
    assert runner.tokens_read <= length(loaded, ANSWER) + 2 * (len(windows) - 1)
    assert runner.tokens_read < sum(length(loaded, window) for window in windows) / 2
    assert runner.cached_tokens == length(loaded, ANSWER)  # one pass kept: each extended the last


def test_another_answer_reads_only_itself_and_the_first_stays_kept(loaded: LoadedModel) -> None:
    runner = LatentRunner(loaded)
    first = run(runner, ANSWER, 1, "mean_answer")
    read = runner.tokens_read
    other = run(runner, OTHER, 1, "mean_answer")
    prompt = answer_span(loaded.tokenizer, ASK, "", max_answer_tokens=None).prompt_len
    assert runner.tokens_read - read == length(loaded, OTHER) - prompt
    assert other == pytest.approx(full_pass(loaded, OTHER, 1, "mean_answer"), abs=1e-4)
    read = runner.tokens_read
    assert run(runner, ANSWER, 1, "mean_answer") == pytest.approx(first, abs=1e-6)
    assert runner.tokens_read == read  # the same answer: nothing new to read
    assert run(runner, ANSWER[:20], 1, "mean_answer") == pytest.approx(
        full_pass(loaded, ANSWER[:20], 1, "mean_answer"), abs=1e-4
    )
    assert runner.tokens_read - read <= 2  # a shorter one: at most what its cut re-tokenised


def test_another_layer_is_its_own_pass(loaded: LoadedModel) -> None:
    runner = LatentRunner(loaded)
    run(runner, ANSWER, 1, "mean_answer")
    read = runner.tokens_read
    assert run(runner, ANSWER, 2, "mean_answer") == pytest.approx(full_pass(loaded, ANSWER, 2, "mean_answer"), abs=1e-4)
    assert runner.tokens_read - read == length(loaded, ANSWER)


def test_kept_passes_stay_within_their_token_budget(loaded: LoadedModel) -> None:
    budget = length(loaded, ANSWER) + 5
    runner = LatentRunner(loaded, max_cached_tokens=budget)
    run(runner, ANSWER, 1, "mean_answer")
    run(runner, OTHER, 1, "mean_answer")  # both do not fit: the older one goes
    assert runner.cached_tokens == length(loaded, OTHER) <= budget
    off = LatentRunner(loaded, max_cached_tokens=0)
    run(off, ANSWER, 1, "mean_answer")
    run(off, ANSWER, 1, "mean_answer")
    assert off.tokens_read == 2 * length(loaded, ANSWER) and off.cached_tokens == 0


def test_a_layer_the_model_lacks_is_refused(loaded: LoadedModel) -> None:
    with pytest.raises(ValueError, match="layers must be in"):
        run(LatentRunner(loaded), ANSWER, 99, "mean_answer")
