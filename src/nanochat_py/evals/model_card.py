"""model_card.md: a Hugging Face model card whose YAML front matter carries the scores as `model-index` results
(what the Hub shows as evaluation results), to upload beside the checkpoint."""

from __future__ import annotations

import yaml

from .report import summary_table

# where each report-card metric comes from, as the Hub names datasets: (type, name, config, split)
DATASETS = {
    "CORE": ("mlfoundations/dclm-core", "CORE (DCLM eval bundle, centred accuracy)", None, None),
    "ARC-Easy": ("allenai/ai2_arc", "ARC-Easy", "ARC-Easy", "test"),
    "ARC-Challenge": ("allenai/ai2_arc", "ARC-Challenge", "ARC-Challenge", "test"),
    "MMLU": ("cais/mmlu", "MMLU", "all", "test"),
    "GSM8K": ("openai/gsm8k", "GSM8K", "main", "test"),
    "HumanEval": ("openai/openai_humaneval", "HumanEval", None, "test"),
    "SpellingBee": ("nanochat/spellingbee", "SpellingBee (nanochat)", None, None),
    "ChatCORE": ("nanochat/chatcore", "ChatCORE (centred mean of the six chat tasks)", None, None),
    "bpb": ("text", "held-out text", None, None),
}


def model_card(result: dict, name: str) -> str:
    """The card's markdown: front matter with model-index, then the report card's table and how to run it."""
    meta = {
        "tags": ["nanochat", "nanochat-py"],
        "pipeline_tag": "text-generation",
        "model-index": [{"name": name, "results": _results(result)}],
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    body = [
        f"# {name}",
        "",
        f"A [nanochat](https://github.com/karpathy/nanochat) model: {result.get('architecture', '')}. "
        f"Scores from `nanochat-py eval` on {result.get('device', '?')} in {result.get('dtype', '?')}.",
        "",
        "## Evaluation",
        "",
        summary_table(result),
    ]
    core = {k: t for k, t in result.get("tasks", {}).items() if t["suite"] == "core"}
    if core:
        body += ["CORE tasks (accuracy, centred on each task's random baseline):", "",
                 "| task | accuracy | centred | items |", "|---|---|---|---|"]  # fmt: skip
        body += [f"| {k} | {t['accuracy']:.4f} | {t['centered']:.4f} | {t['n']} |" for k, t in core.items()]
        body.append("")
    body += ["## Use", "", "```sh",
             "nanochat-py chat --source hf:OWNER/REPO      # or --source DIR for a local copy", "```", ""]  # fmt: skip
    return f"---\n{front}---\n\n" + "\n".join(body)


def _results(result: dict) -> list[dict]:
    metrics = {}
    if "core" in result:
        metrics["CORE"] = ("core", result["core"])
    for label, t in result.get("tasks", {}).items():
        if t["suite"] != "core":
            metrics[label] = ("accuracy", t["accuracy"])
    if "chatcore" in result:
        metrics["ChatCORE"] = ("chatcore", result["chatcore"])
    if "bpb" in result:
        metrics["bpb"] = ("bits_per_byte", result["bpb"])
    return [_entry(label, kind, value) for label, (kind, value) in metrics.items()]


def _entry(label: str, kind: str, value: float) -> dict:
    dtype, dname, config, split = DATASETS.get(label, (f"nanochat-py/{label}", f"{label} (held-out)", None, None))
    dataset = {"name": dname, "type": dtype}
    if config:
        dataset["config"] = config
    if split:
        dataset["split"] = split
    return {
        "task": {"type": "text-generation", "name": "Text Generation"},
        "dataset": dataset,
        "metrics": [{"type": kind, "value": round(float(value), 4), "name": label}],
    }
