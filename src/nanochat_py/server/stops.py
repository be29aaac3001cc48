"""OpenAI `stop` strings over streamed text: hold back only what could still become a stop string.

Each stop string gets a Knuth-Morris-Pratt automaton whose state is how much of it the text now ends with,
so every new character costs O(1) amortised per stop string, however long the text or the stop strings
(a search of the held-back text on every token costs O(length^2)). The stop string completed first wins,
which makes the result independent of how the text was cut into pieces.
"""

from __future__ import annotations


class _Automaton:
    def __init__(self, pattern: str):
        self.pattern = pattern
        # fallback[i]: the length of the longest proper prefix of pattern[:i + 1] that is also its suffix
        self.fallback = [0] * len(pattern)
        k = 0
        for i in range(1, len(pattern)):
            while k and pattern[i] != pattern[k]:
                k = self.fallback[k - 1]
            k += pattern[i] == pattern[k]
            self.fallback[i] = k
        self.matched = 0  # the text ends with pattern[:matched]

    def feed(self, char: str) -> bool:
        """Advance by one character; True when the text now ends with the whole pattern."""
        k = self.matched
        while k and char != self.pattern[k]:
            k = self.fallback[k - 1]
        k += char == self.pattern[k]
        self.matched = k
        return k == len(self.pattern)


class StopMatcher:
    def __init__(self, stops: list[str]):
        self.automata = [_Automaton(s) for s in stops if s]
        self.held = ""  # text that may be the start of a stop string, not sent yet
        self.stopped = False

    def add(self, text: str) -> str:
        """The text that is safe to send now; after a stop string is seen, nothing more."""
        if self.stopped or not self.automata:
            return "" if self.stopped else text
        pending = self.held + text
        start = len(self.held)
        for i in range(len(text)):
            for automaton in self.automata:
                if automaton.feed(text[i]):
                    self.stopped, self.held = True, ""
                    return pending[: start + i + 1 - len(automaton.pattern)]
        keep = max(a.matched for a in self.automata)
        self.held = pending[len(pending) - keep :]
        return pending[: len(pending) - keep]

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out
