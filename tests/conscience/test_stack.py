"""The one builder of the conscience stack hands every knob of the settings to its class."""

from __future__ import annotations

from dataclasses import fields

from service.conscience.stack import ConscienceKnobs, build_judge, build_repairer, build_reviewer
from service.settings import Settings


def test_the_knobs_are_settings_and_their_defaults_are_the_proxys() -> None:
    derived = {"calibrated_thresholds"}  # read from the settings' thresholds_path
    assert {knob.name for knob in fields(ConscienceKnobs)} - derived <= set(Settings.flat_names.values())
    assert ConscienceKnobs() == ConscienceKnobs.from_settings(Settings())


def test_every_knob_reaches_its_class() -> None:
    settings = Settings(
        threshold=0.3, judge_max_answer_chars=5000, judge_window_overlap_chars=100, judge_max_windows=4,
        reasoned_max_tokens=99, repair_max_tokens=77, repair_temperature=0.25, refusal_message="No.",
    )
    knobs = ConscienceKnobs.from_settings(settings)
    backend = object()
    judge = build_judge(backend, knobs)  # type: ignore[arg-type]
    assert (judge.threshold, judge._max_chars, judge._overlap, judge._max_windows, judge._reasoned_max_tokens) == (
        0.3, 5000, 100, 4, 99,
    )
    repairer = build_repairer(backend, knobs)  # type: ignore[arg-type]
    assert (repairer._max_tokens, repairer._temperature, repairer._max_chars) == (77, 0.25, 5000)
    assert build_reviewer(backend, knobs).refusal_message == "No."  # type: ignore[arg-type]


def test_a_consumer_overrides_only_the_knobs_it_owns() -> None:
    knobs = ConscienceKnobs.from_settings(Settings(repair_temperature=0.1), threshold=0.9)
    assert (knobs.threshold, knobs.repair_temperature) == (0.9, 0.1)
