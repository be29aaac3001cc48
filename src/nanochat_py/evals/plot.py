"""eval.png: the training run's curves (one panel per stage: loss, held-out bpb or reward by step) and the scores."""

from __future__ import annotations

import os
from pathlib import Path


def plot(stages: list[dict], accuracies: dict[str, float], bpb: float | None, path: Path) -> Path:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    panels = len(stages) + 1
    width = max(4.5, 0.35 * len(accuracies))  # room for a label per CORE task
    ratios = [4.5] * len(stages) + [width]
    fig, axes = plt.subplots(1, panels, figsize=(sum(ratios), 3.6), squeeze=False, gridspec_kw={"width_ratios": ratios})
    for ax, stage in zip(axes[0], stages, strict=False):
        for key, style in (("loss", "-"), ("val_bpb", "o-"), ("reward", "-")):
            points = [(h["step"], h[key]) for h in stage["history"] if key in h]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=key, markersize=3)
        ax.set_title(stage["stage"])
        ax.set_xlabel("step")
        ax.legend()
    ax = axes[0][-1]
    ax.bar(list(accuracies), list(accuracies.values()), color="#4a7")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelrotation=90 if len(accuracies) > 4 else 0, labelsize=8)
    ax.set_title("accuracy" + (f"; bpb {bpb:.3f}" if bpb is not None else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
