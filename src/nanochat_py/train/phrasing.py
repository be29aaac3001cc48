"""How people phrase things: template families, numbers written as words, and the noise of real typing.

A question is built from a *family* (a frame such as "Can you work out {e} for me?") and a core (such as
"17 plus 5"). Every family is on one side of a fixed split: training data only ever uses the training
families, and the held-out evaluation asks in families the model has never seen, so a score on it measures
how well the model handles a new way of asking, not whether it memorised the old ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen").split()  # fmt: skip
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def in_words(n: int) -> str:
    """0..999 in English words: 7 -> seven, 42 -> forty-two, 305 -> three hundred and five."""
    if not 0 <= n <= 999:
        raise ValueError(f"{n} is outside 0..999")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    rest = n % 100
    return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + in_words(rest))


@dataclass(frozen=True)
class Family:
    """A way of asking: a template with named slots, on the training side or the held-out side."""

    name: str
    template: str
    held_out: bool = False

    def render(self, **slots: str) -> str:
        return self.template.format(**slots)


def families(train: list[str], held_out: list[str], prefix: str) -> list[Family]:
    """Families from two lists of templates, named prefix/0, prefix/1, ... so runs are reproducible."""
    out = [Family(f"{prefix}/{i}", t) for i, t in enumerate(train)]
    return out + [Family(f"{prefix}/h{i}", t, held_out=True) for i, t in enumerate(held_out)]


def pick(rng: random.Random, options: list[Family], split: str) -> Family:
    """A family from the training side (split "train") or the held-out side ("eval")."""
    pool = [f for f in options if f.held_out == (split == "eval")]
    return rng.choice(pool)


def typed(rng: random.Random, text: str) -> str:
    """The text as a person might type it: case, punctuation and spacing vary; the words do not.

    Applied to training and held-out questions alike (a trailing newline, doubled spaces, lower case, a
    missing question mark, ALL CAPS now and then), since none of it changes what is being asked.
    """
    r = rng.random()
    if r < 0.25:
        text = text.lower()
    elif r < 0.30:
        text = text.upper()
    elif r < 0.45 and text:
        text = text[0].lower() + text[1:]
    if rng.random() < 0.2 and text[-1:] in "?.!":
        text = text[:-1]
    elif rng.random() < 0.05 and text[-1:] == "?":
        text += "?"
    if rng.random() < 0.1:
        words = text.split(" ")
        i = rng.randrange(len(words))
        words[i] += " "  # one doubled space somewhere
        text = " ".join(words)
    if rng.random() < 0.1:
        text += "\n"
    elif rng.random() < 0.05:
        text = " " + text + " "
    return text
