"""What every evaluation returns: one score per task, with what guessing would score."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TaskScore:
    task: str  # the label nanochat's report card uses, e.g. "hellaswag_zeroshot", "ARC-Easy", "GSM8K"
    accuracy: float  # share of items answered correctly, 0..1
    n: int  # items scored
    random_baseline: float = 0.0  # the accuracy of guessing, 0..1 (0 for open-ended tasks)

    @property
    def centered(self) -> float:
        """Accuracy rescaled so that guessing scores 0 and a perfect score 1, as nanochat centres it."""
        return (self.accuracy - self.random_baseline) / (1.0 - self.random_baseline)

    def to_dict(self) -> dict:
        return {**asdict(self), "centered": self.centered}
