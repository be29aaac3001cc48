"""The DCLM eval bundle that CORE reads, in its own layout: `core.yaml` (the tasks), `eval_meta_data.csv` (each
task's random baseline, in percent) and `eval_data/**.jsonl` (the items), from a directory or `eval_bundle.zip`.

Without --bundle it is found where nanochat puts it ($NANOCHAT_BASE_DIR/eval_bundle), else in our cache, else it
is downloaded once from the URL nanochat's base_eval uses (about 160 MB), into the cache.
"""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml
from tqdm import tqdm

from ..checkpoint import write_atomically
from ..errors import NanochatError
from ..sources import default_base_dir

EVAL_BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
REQUIRED_FIELDS = {
    "multiple_choice": ("query", "choices", "gold"),
    "schema": ("context_options", "continuation", "gold"),
    "language_modeling": ("context", "continuation"),
}


@dataclass
class CoreTask:
    label: str
    kind: str  # one of TASK_TYPES
    num_fewshot: int
    delimiter: str  # between a prompt and its continuation; nanochat's default is one space
    random_baseline: float  # 0..1 (the csv says percent)
    items: list[dict]  # in file order


def read_bundle(path: str | os.PathLike) -> list[CoreTask]:
    """Every task of core.yaml, in its order, with its items and random baseline."""
    files = _BundleFiles(Path(path).expanduser())
    config = _yaml(files.read("core.yaml"), files.name("core.yaml"))
    baselines = _baselines(files.read("eval_meta_data.csv"), files.name("eval_meta_data.csv"))
    tasks = config.get("icl_tasks") if isinstance(config, dict) else None
    if not isinstance(tasks, list) or not tasks:
        raise NanochatError(f"{files.name('core.yaml')} has no icl_tasks list")
    return [_task(entry, baselines, files) for entry in tasks]


def find_bundle(download: bool = True) -> Path:
    """nanochat's own unpacked bundle if it has one, else our cached zip, else the zip downloaded into the cache."""
    nanochat = default_base_dir() / "eval_bundle"
    if (nanochat / "core.yaml").is_file():
        return nanochat
    cached = cache_dir() / "eval_bundle.zip"
    if cached.is_file():
        return cached
    if not download:
        raise NanochatError(f"no CORE eval bundle in {nanochat} or {cached}; pass --bundle PATH")
    return fetch_bundle(cached)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nanochat-py"


def fetch_bundle(target: Path, url: str | None = None) -> Path:
    """Download the bundle's zip once (written whole or not at all); offline, say where to get it instead."""
    url = url or EVAL_BUNDLE_URL
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            size = int(response.headers.get("Content-Length") or 0) or None

            def save(tmp: Path) -> None:
                with open(tmp, "wb") as out, tqdm(total=size, unit="B", unit_scale=True, desc="eval_bundle") as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))

            write_atomically(target, save)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise NanochatError(
            f"could not download the CORE eval bundle from {url} ({reason}); download eval_bundle.zip on a machine "
            f"that is online and pass --bundle PATH (the zip or its unpacked directory)"
        ) from None
    if not zipfile.is_zipfile(target):
        target.unlink()
        raise NanochatError(f"{url} did not give a zip file; download eval_bundle.zip yourself and pass --bundle")
    return target


class _BundleFiles:
    """Files of the bundle by their path inside it, from a directory or a zip (with or without a top folder)."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.zip, self.root = None, path / "eval_bundle" if (path / "eval_bundle" / "core.yaml").is_file() else path
            if not (self.root / "core.yaml").is_file():
                raise NanochatError(f"{path} is not an eval bundle: it has no core.yaml")
        elif zipfile.is_zipfile(path):
            self.zip = zipfile.ZipFile(path)
            tops = sorted((n for n in self.zip.namelist() if PurePosixPath(n).name == "core.yaml"), key=len)
            if not tops:
                raise NanochatError(f"{path} is not an eval bundle: it has no core.yaml")
            self.root = PurePosixPath(tops[0]).parent
        elif path.exists():
            raise NanochatError(f"{path} is neither a directory nor a zip file")
        else:
            raise NanochatError(f"eval bundle {path} does not exist")

    def name(self, inner: str) -> str:
        return f"{self.path}:{inner}" if self.zip else str(self.root / inner)

    def read(self, inner: str) -> str:
        try:
            if self.zip is None:
                return (self.root / inner).read_text(encoding="utf-8")
            with self.zip.open(str(self.root / inner)) as f:
                return io.TextIOWrapper(f, encoding="utf-8").read()
        except (KeyError, FileNotFoundError):
            raise NanochatError(f"the eval bundle has no {self.name(inner)}") from None


def _yaml(text: str, where: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NanochatError(f"{where} is not valid YAML: {e}") from None


def _baselines(text: str, where: str) -> dict[str, float]:
    rows = csv.DictReader(io.StringIO(text))
    if not rows.fieldnames or not {"Eval Task", "Random baseline"} <= set(rows.fieldnames):
        raise NanochatError(f"{where} needs the columns 'Eval Task' and 'Random baseline'")
    out = {}
    for n, row in enumerate(rows, 2):
        try:
            out[row["Eval Task"]] = float(row["Random baseline"])
        except (TypeError, ValueError):
            raise NanochatError(f"{where}:{n}: 'Random baseline' is not a number") from None
    return out


def _task(entry, baselines: dict[str, float], files: _BundleFiles) -> CoreTask:
    where = files.name("core.yaml")
    if not isinstance(entry, dict) or not all(k in entry for k in ("label", "dataset_uri", "icl_task_type")):
        raise NanochatError(f"{where}: every task needs label, dataset_uri and icl_task_type, got {entry!r:.80}")
    label, kind, shots = str(entry["label"]), entry["icl_task_type"], entry.get("num_fewshot", [0])
    shots = shots[0] if isinstance(shots, list) and shots else shots  # a list in the bundle; nanochat takes the first
    if kind not in TASK_TYPES:
        raise NanochatError(f"{where}: task {label} has type {kind!r}; CORE knows {', '.join(TASK_TYPES)}")
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise NanochatError(f"{where}: task {label} has num_fewshot {shots!r}; want a whole number")
    if label not in baselines:
        raise NanochatError(f"{files.name('eval_meta_data.csv')} has no random baseline for task {label}")
    uri = str(entry["dataset_uri"])
    items = _items(files.read(f"eval_data/{uri}"), files.name(f"eval_data/{uri}"), kind)
    if shots >= len(items):
        raise NanochatError(f"task {label} asks for {shots} few-shot examples but has {len(items)} items")
    delimiter = entry.get("continuation_delimiter", " ")
    return CoreTask(label, kind, shots, str(delimiter), 0.01 * baselines[label], items)


def _items(text: str, where: str, kind: str) -> list[dict]:
    items = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: a JSON string may hold a raw U+2028
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise NanochatError(f"{where}:{n}: not JSON ({e.msg})") from None
        missing = [k for k in REQUIRED_FIELDS[kind] if not isinstance(item, dict) or k not in item]
        if missing:
            raise NanochatError(f"{where}:{n}: a {kind} item needs {', '.join(missing)}")
        items.append(item)
    if not items:
        raise NanochatError(f"{where} has no items")
    return items
