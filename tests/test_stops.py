"""OpenAI stop strings over streamed text pieces."""

from __future__ import annotations

import random

import pytest

from nanochat_py.server.stops import StopMatcher


def stream(text: str, stops: list[str], seed: int) -> tuple[str, bool]:
    """Feed `text` in random-sized pieces; return what was let through and whether it stopped."""
    rng, matcher, out, i = random.Random(seed), StopMatcher(stops), [], 0
    while i < len(text):
        n = rng.randint(1, 4)
        out.append(matcher.add(text[i : i + n]))
        i += n
    out.append(matcher.flush())
    return "".join(out), matcher.stopped


@pytest.mark.parametrize("seed", range(20))
def test_text_before_the_first_stop_string_whatever_the_piece_sizes(seed):
    text = "The answer is 42. END of story. END again"
    assert stream(text, ["END"], seed) == ("The answer is 42. ", True)
    assert stream(text, ["story", "42"], seed) == ("The answer is ", True)
    assert stream(text, ["nowhere"], seed) == (text, False)
    assert stream(text, ["again!"], seed) == (text, False)  # a prefix held back at the end is released
    assert stream(text, [], seed) == (text, False)


def test_nothing_passes_after_a_stop():
    m = StopMatcher(["\n\n"])
    assert m.add("one\n") == "one"
    assert m.add("\ntwo") == ""
    assert m.add("three") == "" and m.flush() == "" and m.stopped
