"""The latent verdict's reused passes (service/backends/local/latent.py): the features of a
longer answer, another answer or a shorter one equal a full forward pass, while the model reads
only the tokens no kept pass covers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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
    return runner.features(ASK, answer, layers=(layer,), pooling=pooling, max_answer_tokens=None)[0]


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


def test_several_layers_are_their_pooled_states_concatenated(loaded: LoadedModel) -> None:
    runner = LatentRunner(loaded)
    answer = "Sure, here is how to do it: first this, then that."
    expected = full_pass(loaded, answer, 1, "mean_answer") + full_pass(loaded, answer, 2, "mean_answer")
    got = runner.features(ASK, answer, layers=(1, 2), pooling="mean_answer", max_answer_tokens=None)[0]
    assert got == pytest.approx(expected, abs=1e-5)
    longer = runner.features(ASK, answer + " And more.", layers=(1, 2), pooling="mean_answer", max_answer_tokens=None)
    both = full_pass(loaded, answer + " And more.", 1, "mean_answer") + full_pass(
        loaded, answer + " And more.", 2, "mean_answer"
    )
    assert longer[0] == pytest.approx(both, abs=1e-5)


def test_a_layer_the_model_lacks_is_refused(loaded: LoadedModel) -> None:
    with pytest.raises(ValueError, match="layers must be in"):
        run(LatentRunner(loaded), ANSWER, 99, "mean_answer")


# --- generations on the base weights: their hidden states are a pass the verdict reuses ---------


@pytest.fixture(scope="module")
def wordy_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model made to say only whole words (" bread", " flour", ...) and never to end its
    turn: its answers tokenise back to exactly the tokens it generated, as a real model's
    ordinary text does (the random model's byte fragments do not), so reuse can be counted."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tmp_path_factory.mktemp("wordy-qwen2")
    shutil.copytree(tiny_model_dir, target, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = [
        token_id for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        if token.startswith("Ġ") and token[1:].isalpha() and len(token) > 3
        and tokenizer(tokenizer.decode([token_id]), add_special_tokens=False)["input_ids"] == [token_id]
    ][:8]
    assert len(words) == 8
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head = model.lm_head.weight
        head.zero_()
        # Four words along +u, four along -u: whichever side the hidden state is on outscores
        # every other token's 0 by far; the small noise makes those four about as likely.
        shared = 20.0 * torch.randn(head.shape[1], generator=generator)
        for index, word in enumerate(words):
            noise = 0.1 * torch.randn(head.shape[1], generator=generator)
            head[word] = (shared if index % 2 else -shared) + noise
    model.save_pretrained(target)
    return target


def greedy(tokens: int):
    from service.backends.local.sampling import SamplingParams

    return SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=tokens, stop=(), seed=0, n=1)


def prompt_ids(loaded: LoadedModel) -> list[int]:
    return list(answer_span(loaded.tokenizer, ASK, "", max_answer_tokens=None).token_ids)


async def generated_text(engine, loaded: LoadedModel, tokens: int, model: str | None = None) -> str:
    from service.backends.local.generation import Usage

    text = ""
    async for event in engine.generate(model, [prompt_ids(loaded)], greedy(tokens)):
        if not isinstance(event, Usage):
            text += "".join(delta.text for delta in event)
    return text


@contextlib.asynccontextmanager
async def recording_engine(model_dir: Path, cache_dir: Path) -> AsyncIterator[tuple[LoadedModel, Any]]:
    """The model and an engine whose base-weight generations record layer 1 for the latent verdict."""
    from service.backends.local.engine import Engine

    loaded = load_model(str(model_dir), cache_dir=cache_dir)
    engine = Engine(loaded, max_queued=4, max_concurrent=2, latent_layers=(1,))
    try:
        yield loaded, engine
    finally:
        await engine.close()


async def test_a_finished_answer_of_the_base_weights_reads_only_its_last_token_again(
    wordy_model_dir: Path, tmp_path: Path
) -> None:
    async with recording_engine(wordy_model_dir, tmp_path) as (loaded, engine):
        answer = await generated_text(engine, loaded, 24)
        assert len(encode_answer(loaded, answer)) == 24
        features, covered = await engine.latent_features(
            ASK, answer, layers=(1,), pooling="mean_answer", max_answer_tokens=None
        )
        assert features == pytest.approx(full_pass(loaded, answer, 1, "mean_answer"), abs=1e-4)
        assert covered == length(loaded, answer)  # the judge's usage: the chat it judged
        # The last sampled token was never fed back; every other position was the generation's.
        assert engine.latent_tokens_read == 1
        # Another layer was not recorded: a whole pass.
        await engine.latent_features(ASK, answer, layers=(2,), pooling="mean_answer", max_answer_tokens=None)
        assert engine.latent_tokens_read == 1 + length(loaded, answer)


async def test_a_window_of_a_running_generation_is_judged_from_what_it_has_read(
    wordy_model_dir: Path, tmp_path: Path
) -> None:
    from service.backends.local.generation import Usage
    from service.conscience.deltas import window_end

    async with recording_engine(wordy_model_dir, tmp_path) as (loaded, engine):
        text, windows = "", []
        stream = engine.generate(None, [prompt_ids(loaded)], greedy(200))
        async for event in stream:
            if isinstance(event, Usage):
                break
            text += "".join(delta.text for delta in event)
            if len(text) > 40 * (len(windows) + 1):  # as a windowed stream judges, mid-generation
                window = text[: window_end(text, 0, False)]  # ends at a space: " ... word "
                features, _ = await engine.latent_features(
                    ASK, window, layers=(1,), pooling="mean_all", max_answer_tokens=None
                )
                assert features == pytest.approx(full_pass(loaded, window, 1, "mean_all"), abs=1e-4)
                windows.append(window)
            if len(windows) == 3:
                break
        await stream.aclose()
        # Each window re-read only its cut (the trailing space, continued as " word").
        assert engine.latent_tokens_read <= 2 * len(windows)
        assert len(windows) == 3


async def test_each_of_n_sampled_choices_is_its_own_pass(wordy_model_dir: Path, tmp_path: Path) -> None:
    from service.backends.local.generation import Usage
    from service.backends.local.sampling import SamplingParams

    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=20, stop=(), seed=0, n=2)
    async with recording_engine(wordy_model_dir, tmp_path) as (loaded, engine):
        answers = ["", ""]
        async for event in engine.generate(None, [prompt_ids(loaded)], params):
            if not isinstance(event, Usage):
                for delta in event:
                    answers[delta.index] += delta.text
        assert answers[0] != answers[1]
        # Sampling may pick a byte fragment that does not tokenise back (this seed does not).
        assert [len(encode_answer(loaded, answer)) for answer in answers] == [20, 20]
        for answer in answers:
            features, _ = await engine.latent_features(
                ASK, answer, layers=(1,), pooling="mean_answer", max_answer_tokens=None
            )
            assert features == pytest.approx(full_pass(loaded, answer, 1, "mean_answer"), abs=1e-4)
        assert engine.latent_tokens_read == 2  # each row's last sampled token


async def test_the_kept_choices_of_an_n_generation_hold_only_their_own_rows(
    wordy_model_dir: Path, tmp_path: Path
) -> None:
    from service.backends.local.generation import Usage
    from service.backends.local.sampling import SamplingParams

    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=20, stop=(), seed=0, n=3)
    async with recording_engine(wordy_model_dir, tmp_path) as (loaded, engine):
        answers = ["", "", ""]
        async for event in engine.generate(None, [prompt_ids(loaded)], params):
            if not isinstance(event, Usage):
                for delta in event:
                    answers[delta.index] += delta.text
        # The first choice judged: its kept pass is extended by its last token and replaced;
        # the other two stay kept as the generation left them.
        await engine.latent_features(ASK, answers[0], layers=(1,), pooling="mean_answer", max_answer_tokens=None)
        config = loaded.model.config
        per_token = 4 * 2 * config.num_hidden_layers * config.num_key_value_heads * (
            config.hidden_size // config.num_attention_heads
        )  # float32 keys and values, every layer
        cache = engine.latent_cache
        assert cache.cached_tokens == 3 * (len(prompt_ids(loaded)) + 20) - 2  # two rows' last tokens unfed
        # Each row's cache in tensors of its own: the memory is what the LRU budget counts, not
        # the whole batch held by the rows still kept.
        assert cache.cached_kv_bytes == cache.cached_tokens * per_token


async def test_an_answer_of_the_adapter_is_not_the_base_models_pass(
    wordy_model_dir: Path, lora_adapters: list[Path], tmp_path: Path
) -> None:
    async with recording_engine(wordy_model_dir, tmp_path) as (loaded, engine):
        await engine.activate_adapter("conscience-v1", str(lora_adapters[0]))
        answer = await generated_text(engine, loaded, 16)  # the policy: the adapter
        features, _ = await engine.latent_features(
            ASK, answer, layers=(1,), pooling="mean_answer", max_answer_tokens=None
        )
        assert engine.latent_tokens_read == length(loaded, answer)  # read whole, on the base weights
        assert features == pytest.approx(full_pass(loaded, answer, 1, "mean_answer"), abs=1e-4)


def encode_answer(loaded: LoadedModel, answer: str) -> list[int]:
    span = answer_span(loaded.tokenizer, ASK, answer, max_answer_tokens=None)
    return list(span.token_ids[span.prompt_len :])
