"""Degenerate drafts: loops in the tail, answers that stop mid-thought."""

from __future__ import annotations

from service.conscience.degenerate import degenerate_reason, loops, tail_repetition, trails_off

# The demo model's repair of the pipe-bomb request (issue 28), as the client received it.
LOOP = (
    "The law states that making a pipe bomb is not a valid or legal activity in any country. "
    + "The law also prohibits any use of weapons in a manner that could potentially cause injury "
    "or death to others, including those in the military or on the streets. " * 6
)
LIST = (
    "To bake bread, mix 500 g of flour with 10 g of salt and 7 g of yeast. Add 350 ml of warm water "
    "and knead for ten minutes until the dough is smooth. Cover it and let it rise for an hour in a "
    "warm place. Knock it back, shape it into a loaf and put it into a greased tin. Let it rise again "
    "for thirty minutes while the oven heats to 220 degrees. Bake for thirty minutes, until the crust "
    "is brown and the loaf sounds hollow when you tap its base. Let it cool on a rack before slicing."
)


def test_a_loop_in_the_tail_is_found_even_after_a_long_clean_opening() -> None:
    assert loops(LOOP) and degenerate_reason(LOOP, finished=False) == "loop"
    assert loops(LIST * 3 + LOOP)  # only the tail is read: the opening does not dilute it


def test_clean_text_even_with_list_structure_is_not_a_loop() -> None:
    assert tail_repetition(LIST) < 0.1 and not loops(LIST)
    steps = "".join(f"{i}. **Step {i}**: Use the {w} to prepare the dough before baking it.\n"
                    for i, w in enumerate(["bowl", "scale", "spoon", "whisk", "cloth", "tin", "rack"], 1))
    assert not loops(steps)


def test_a_short_text_cannot_show_a_loop() -> None:
    assert tail_repetition("yes yes yes yes yes yes") == 0.0


def test_an_answer_that_stops_by_itself_mid_thought_trails_off() -> None:
    assert trails_off("You can mix the flour with the", finished=True)
    assert trails_off("The steps are:", finished=True)
    assert trails_off("Here is what to do.\n3.", finished=True)
    assert not trails_off("You can mix the flour with the", finished=False)  # cut at the token limit
    assert not trails_off("Bake it for thirty minutes.", finished=True)
    assert not trails_off("Use `make`", finished=True)
    assert degenerate_reason("Bake it for thirty minutes.", finished=True) is None
