"""The data ChatCORE scores: the Hub datasets in their own files, and nanochat's SpellingBee word list.

nanochat reads ARC, MMLU, GSM8K and HumanEval with `datasets.load_dataset(repo, config, split=...)` and
then `.shuffle(seed=42)`. Here the same rows come from the same files (the Hub's parquet, or the same rows
as JSON lines), and `shuffled` puts them in the order that shuffle gives, without the `datasets` package:
- a local copy, laid out as on the Hub (`<dir>/ai2_arc/ARC-Easy/test-00000-of-00001.parquet`, ...);
- else the Hugging Face cache, downloading only the one file a task needs when online.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import NanochatError
from ..hub import _resolves
from ..sources import default_base_dir

DATA_FLAG = "--data"  # the `eval` flag that points at local data; named in the errors below
SHUFFLE_SEED = 42  # nanochat's `.shuffle(seed=42)`
WORD_LIST = "words_alpha.txt"  # nanochat's SpellingBee words
WORD_LIST_URL = "https://raw.githubusercontent.com/dwyl/english-words/refs/heads/master/words_alpha.txt"


class DataError(NanochatError):
    """Evaluation data that cannot be found or read."""


@dataclass(frozen=True)
class HubSplit:
    """One split of one config of a Hub dataset, and the columns nanochat reads from it."""

    repo: str
    config: str
    split: str
    columns: tuple[str, ...]

    @property
    def hub_file(self) -> str:
        return f"{self.config}/{self.split}-00000-of-00001.parquet"  # each of these splits is a single shard

    @property
    def folder(self) -> str:
        return self.repo.split("/")[1]

    def __str__(self) -> str:
        return f"{self.repo} ({self.config}, {self.split})"


SPLITS = {
    "arc-easy": HubSplit("allenai/ai2_arc", "ARC-Easy", "test", ("question", "choices", "answerKey")),
    "arc-challenge": HubSplit("allenai/ai2_arc", "ARC-Challenge", "test", ("question", "choices", "answerKey")),
    "mmlu": HubSplit("cais/mmlu", "all", "test", ("question", "subject", "choices", "answer")),
    "gsm8k": HubSplit("openai/gsm8k", "main", "test", ("question", "answer")),
    "humaneval": HubSplit(
        "openai/openai_humaneval", "openai_humaneval", "test", ("prompt", "canonical_solution", "test", "entry_point")
    ),
}


def load_rows(split: HubSplit, data: Path | None) -> list[dict]:
    """The split's rows in file order, from `data` (a directory or a file) or the Hugging Face cache."""
    files = local_files(split, Path(data)) if data is not None else [hub_file(split)]
    rows = [row for path in files for row in read_rows(path)]
    missing = [c for c in split.columns if rows and c not in rows[0]]
    if missing:
        raise DataError(f"{files[0]}: no column {', '.join(missing)}; {split} has {', '.join(split.columns)}")
    if not rows:
        raise DataError(f"{files[0]}: no rows")
    return rows


def shuffled(rows: list, seed: int = SHUFFLE_SEED) -> list:
    """The order `datasets.Dataset.shuffle(seed=seed)` gives: numpy's default_rng(seed).permutation."""
    return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]


def local_files(split: HubSplit, data: Path) -> list[Path]:
    """`data` itself if it is a file, else the split's files under it, in the Hub's layout or a folder nearer.

    Looked for, in order: <data>/<owner>/<name>/, <data>/<name>/ and <data>/ itself, each with or without the
    config folder (ARC-Easy/, all/, main/, openai_humaneval/), holding <split>-*.parquet, <split>.parquet,
    <split>*.jsonl or <split>*.jsonl.gz.
    """
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise DataError(f"{data}: no such file or directory (given as {DATA_FLAG} for {split})")
    patterns = (
        f"{split.split}-*.parquet",
        f"{split.split}.parquet",
        f"{split.split}*.jsonl",
        f"{split.split}*.jsonl.gz",
    )
    for base in (data / split.repo, data / split.folder, data):
        for folder in (base / split.config, base):
            for pattern in patterns:
                found = sorted(folder.glob(pattern))  # several shards are read in name order, as `datasets` does
                if found:
                    return found
    raise DataError(
        f"no data for {split} in {data}: expected {data}/{split.folder}/{split.hub_file} "
        f"(the Hub's layout; JSON lines work too)"
    )


def hub_file(split: HubSplit) -> Path:
    """The split's parquet file from the Hugging Face cache, downloaded into it first if online."""
    from huggingface_hub import constants, hf_hub_download

    try:  # cached: no network at all
        return Path(hf_hub_download(split.repo, split.hub_file, repo_type="dataset", local_files_only=True))
    except Exception:
        pass
    why = "HF_HUB_OFFLINE is set"
    if not constants.HF_HUB_OFFLINE:
        try:
            if not _resolves(constants.ENDPOINT):  # offline: say so now, not after the client's retries (~20 s)
                raise ConnectionError(f"cannot resolve {constants.ENDPOINT}")
            return Path(hf_hub_download(split.repo, split.hub_file, repo_type="dataset"))
        except Exception as e:  # offline, DNS, proxy, 5xx, a moved file
            why = f"the Hub could not be reached ({type(e).__name__}: {e})"
    raise DataError(
        f"no local data for {split}: it is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}. "
        f"Pass {DATA_FLAG} DIR with {split.folder}/{split.hub_file} in it, or connect once to download it"
    )


def read_rows(path: Path) -> list[dict]:
    """Rows of a parquet file or of JSON lines (optionally gzipped)."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:  # pyarrow's errors are OSError / ValueError subclasses
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None


def load_words(data: Path | None) -> list[str]:
    """nanochat's SpellingBee word list, one word per line, kept exactly as nanochat reads it (stripped lines).

    nanochat downloads it into its base dir; so: `data` (the file, or a directory holding it), else
    $NANOCHAT_BASE_DIR/words_alpha.txt if nanochat has it, else an error that says where to get it.
    """
    path = Path(data) if data is not None else default_base_dir() / WORD_LIST
    if path.is_dir():
        path = path / WORD_LIST
    if not path.is_file():
        raise DataError(
            f"SpellingBee needs nanochat's word list {WORD_LIST} ({WORD_LIST_URL}); not found at {path}. "
            f"Download it and pass {DATA_FLAG} DIR (a folder holding it) or the file itself"
        )
    try:
        with open(path, encoding="utf-8") as f:
            words = [line.strip() for line in f]
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    if not words:
        raise DataError(f"{path}: the word list is empty")
    return words
