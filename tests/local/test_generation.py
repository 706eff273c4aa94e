"""Generation through LocalBackend on the tiny model: shapes, sampling parameters, streaming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.backends.local.backend import LocalBackend
from service.core.backend import Backend, BackendError, SelfNamingBackend

QUESTION = [{"role": "user", "content": "How do I bake bread at home?"}]


def chat_body(backend: LocalBackend, **fields: Any) -> dict[str, Any]:
    return {"model": backend.served_base_name, "messages": QUESTION, **fields}


def reference_greedy(model_dir: Path, backend: LocalBackend, max_new_tokens: int) -> tuple[str, int, int]:
    """transformers' own generate(): (text, prompt tokens, completion tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        output = model.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens)
    new = output[0, prompt.shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True), prompt.shape[1], new.shape[0]


async def streamed(backend: LocalBackend, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in backend.chat_stream(body)]


def joined(chunks: list[dict[str, Any]], index: int) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["index"] == index
    )


async def test_greedy_chat_matches_transformers_generate(backend: LocalBackend, tiny_model_dir: Path) -> None:
    expected, prompt_tokens, completion_tokens = reference_greedy(tiny_model_dir, backend, 24)

    response = await backend.chat(chat_body(backend, temperature=0, max_tokens=24))

    assert response["object"] == "chat.completion"
    assert response["id"].startswith("chatcmpl-")
    assert response["model"] == backend.served_base_name
    [choice] = response["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == expected
    assert choice["finish_reason"] == ("length" if completion_tokens == 24 else "stop")
    assert response["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def test_stream_carries_the_same_text_as_the_whole_answer(backend: LocalBackend) -> None:
    body = chat_body(backend, temperature=1.0, seed=7, n=2, max_tokens=16)
    whole = await backend.chat(body)

    chunks = await streamed(backend, {**body, "stream": True, "stream_options": {"include_usage": True}})

    assert {chunk["id"] for chunk in chunks} == {chunks[0]["id"]}
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    for index in (0, 1):
        first = next(c for c in chunks if c["choices"] and c["choices"][0]["index"] == index)
        assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert joined(chunks, index) == whole["choices"][index]["message"]["content"]
        reasons = [
            choice["finish_reason"]
            for chunk in chunks
            for choice in chunk["choices"]
            if choice["index"] == index and choice["finish_reason"]
        ]
        assert reasons == [whole["choices"][index]["finish_reason"]]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


async def test_continuous_usage_stats_put_the_usage_so_far_on_every_chunk(backend: LocalBackend) -> None:
    """vLLM's option, asked for by a windowed enforce stream: a reader that stops the stream
    early still knows the prompt's tokens and what was generated up to there."""
    body = chat_body(backend, temperature=1.0, seed=3, n=2, max_tokens=16)
    whole = await backend.chat(body)
    options = {"include_usage": True, "continuous_usage_stats": True}

    chunks = await streamed(backend, {**body, "stream": True, "stream_options": options})

    prompt = whole["usage"]["prompt_tokens"]
    so_far = [chunk["usage"] for chunk in chunks]
    assert all(usage["prompt_tokens"] == prompt for usage in so_far)
    completions = [usage["completion_tokens"] for usage in so_far]
    assert completions == sorted(completions) and 0 < completions[0] <= 2
    assert all(usage["total_tokens"] == prompt + usage["completion_tokens"] for usage in so_far)
    assert so_far[-2] == so_far[-1] == whole["usage"]  # the last choice chunk, then the usage chunk


async def test_seed_repeats_and_n_gives_distinct_indexed_choices(backend: LocalBackend) -> None:
    body = chat_body(backend, temperature=1.0, n=3, max_tokens=12)
    first = await backend.chat({**body, "seed": 11})
    again = await backend.chat({**body, "seed": 11})
    other = await backend.chat({**body, "seed": 12})

    texts = [choice["message"]["content"] for choice in first["choices"]]
    assert [choice["index"] for choice in first["choices"]] == [0, 1, 2]
    assert texts == [choice["message"]["content"] for choice in again["choices"]]
    assert texts != [choice["message"]["content"] for choice in other["choices"]]
    assert len(set(texts)) > 1
    counted = first["usage"]["completion_tokens"]
    assert 3 <= counted <= 3 * 12


async def test_a_tiny_top_p_keeps_only_the_most_likely_token(backend: LocalBackend) -> None:
    greedy = await backend.chat(chat_body(backend, temperature=0, max_tokens=20))
    nucleus = await backend.chat(chat_body(backend, temperature=1.5, top_p=1e-9, seed=3, max_tokens=20))
    assert nucleus["choices"][0]["message"] == greedy["choices"][0]["message"]


async def test_stop_string_cuts_the_text_in_whole_and_streamed_answers(backend: LocalBackend) -> None:
    greedy = await backend.chat(chat_body(backend, temperature=0, max_tokens=30))
    text = greedy["choices"][0]["message"]["content"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), f"the greedy text is too short to pick a stop string from: {text!r}"
    body = chat_body(backend, temperature=0, max_tokens=30, stop=[stop, "\x00never"])

    cut = await backend.chat(body)
    chunks = await streamed(backend, {**body, "stream": True})

    assert cut["choices"][0]["message"]["content"] == text[: text.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert joined(chunks, 0) == text[: text.index(stop)]


async def test_max_completion_tokens_bounds_the_answer(backend: LocalBackend) -> None:
    response = await backend.chat(
        chat_body(backend, temperature=0, max_tokens=50, max_completion_tokens=3)
    )
    assert response["usage"]["completion_tokens"] <= 3


async def test_text_completion_of_several_prompts(backend: LocalBackend) -> None:
    body = {"model": backend.served_base_name, "prompt": ["a robot may", "the quick"],
            "max_tokens": 6, "temperature": 0, "n": 2}
    response = await backend.completion(body)
    chunks = [chunk async for chunk in backend.completion_stream({**body, "stream": True})]

    assert response["object"] == "text_completion"
    assert [choice["index"] for choice in response["choices"]] == [0, 1, 2, 3]
    texts = [choice["text"] for choice in response["choices"]]
    assert texts[0] == texts[1] and texts[2] == texts[3]  # greedy: both choices agree
    for index, text in enumerate(texts):
        assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"][0]["index"] == index) == text
    single = await backend.completion({**body, "prompt": "the quick", "n": 1})
    assert single["choices"][0]["text"] == texts[2]
    tokenizer = backend.engine.loaded.tokenizer
    prompt_tokens = sum(len(tokenizer(prompt)["input_ids"]) for prompt in body["prompt"])
    assert response["usage"]["prompt_tokens"] == prompt_tokens
    assert 4 <= response["usage"]["completion_tokens"] <= 4 * 6


@pytest.mark.parametrize(
    ("fields", "status", "param", "code"),
    [
        ({"model": "no-such-model"}, 404, "model", "model_not_found"),
        ({"temperature": 3}, 400, "temperature", None),
        ({"top_p": 0}, 400, "top_p", None),
        ({"n": 0}, 400, "n", None),
        ({"stop": ["a"] * 9}, 400, "stop", None),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools", None),
        ({"messages": []}, 400, "messages", None),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
         "messages[0].content", None),
        ({"messages": [{"role": "user", "content": "robot " * 3000}]}, 400, "messages",
         "context_length_exceeded"),
    ],
)
async def test_bad_requests_get_openai_shaped_errors(
    backend: LocalBackend, fields: dict[str, Any], status: int, param: str, code: str | None
) -> None:
    body = {**chat_body(backend, max_tokens=2), **fields}
    with pytest.raises(BackendError) as raised:
        await backend.chat(body)
    with pytest.raises(BackendError) as raised_streaming:
        await streamed(backend, body)
    for error in (raised.value, raised_streaming.value):
        assert (error.status_code, error.param, error.code) == (status, param, code)
        assert error.message


async def test_embeddings_come_from_the_base_model_only(backend: LocalBackend) -> None:
    """The frozen model's states (tests/local/test_embeddings.py); another name is refused clearly."""
    found = await backend.embeddings({"model": backend.served_base_name, "input": "hi"})
    assert len(found["data"]) == 1 and found["model"] == backend.embeddings_model == backend.served_base_name
    with pytest.raises(BackendError) as raised:
        await backend.embeddings({"model": "an-adapter", "input": "hi"})
    assert raised.value.status_code == 404 and "embeddings" in raised.value.message


async def test_models_lists_the_base_model(backend: LocalBackend) -> None:
    assert isinstance(backend, Backend) and isinstance(backend, SelfNamingBackend)
    assert await backend.models() == [
        {"id": backend.served_base_name, "object": "model", "owned_by": "conscience",
         "max_model_len": backend.engine.context_len, "root": backend.served_base_name, "parent": None}
    ]
    await backend.check_ready()
