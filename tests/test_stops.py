"""OpenAI stop strings over streamed text pieces."""

from __future__ import annotations

import random
import time

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


def test_the_stop_string_completed_first_wins_however_the_text_is_cut():
    """Streamed text is matched as it arrives: a stop string that ends earlier wins over one that starts earlier."""
    for seed in range(10):
        assert stream("xx abcd yy", ["abcd", "bc"], seed) == ("xx a", True)


def test_matching_is_linear_in_the_text():
    """Four 256-character stop strings that match all but their last character at every position: each character
    costs the same however long the text already is (a quadratic matcher takes minutes here)."""
    stops = ["a" * 255 + "b", "a" * 255 + "c", "a" * 254 + "bd", "ab" * 128]
    matcher, text = StopMatcher(stops), "a" * 40_000
    started = time.monotonic()
    out = "".join(matcher.add(c) for c in text) + matcher.flush()
    assert time.monotonic() - started < 2.0
    assert out == text and not matcher.stopped
