"""`hf:<owner>/<repo>[@revision]` sources, through huggingface_hub's cache.

Only the files a load needs are downloaded (one checkpoint, its meta, the tokenizer), with the Hub's
progress bars. Once cached, a source loads with no network (HF_HUB_OFFLINE=1 or simply offline).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import CheckpointError
from .sources import PHASES, meta_name_for, pick_model_file


def parse(spec: str) -> tuple[str, str | None]:
    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise CheckpointError(f"hf:{spec} is not a Hugging Face repo; write hf:<owner>/<repo>[@revision]")
    return repo, revision or None


def files_to_fetch(names: list[str], step=None) -> list[str]:
    """The subset of a repo's files one load needs, the model file first.

    nanochat repos hold model_<step>.pt, meta_<step>.json and tokenizer.pkl at the top, or the same in
    sub-folders laid out like a nanochat base dir (tokenizer/, *_checkpoints/<tag>/).
    """
    folders = sorted({n.rpartition("/")[0] for n in names}, key=_folder_preference)
    for folder in folders:
        prefix = folder + "/" if folder else ""
        here = [n[len(prefix) :] for n in names if n.startswith(prefix) and "/" not in n[len(prefix) :]]
        model = pick_model_file(here, step)
        if model is not None:  # nanochat's own layout: exact, and what nanochat repos ship
            meta = [prefix + meta_name_for(model)] if prefix + meta_name_for(model) in names else []
            return [prefix + model, *meta, *_tokenizer_near(prefix, names)]
    if "config.json" in names:
        weights = [n for n in names if n.endswith(".safetensors") and "/" not in n]
        extras = ["config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer.pkl"]
        return weights + [n for n in extras if n in names]
    raise CheckpointError(
        "no nanochat checkpoint in this repo: expected model_<step>.pt + meta json, or config.json + *.safetensors"
    )


def _folder_preference(folder: str) -> tuple:
    """Shallow folders first, then the phase and largest d<N> tag a local base dir would pick."""
    phase = next((i for i, p in enumerate(PHASES) if f"{p}_checkpoints" in folder.split("/")), len(PHASES))
    depth = re.search(r"(?:^|/)d(\d+)$", folder)
    return folder.count("/"), phase, -int(depth.group(1)) if depth else 0, folder


def _tokenizer_near(prefix: str, names: list[str]) -> list[str]:
    """The tokenizer sources.find_tokenizer will look for: beside the model, in tokenizer/, or <base>/tokenizer/."""
    base = "/".join(prefix.rstrip("/").split("/")[:-2])
    for folder in (prefix, prefix + "tokenizer/", base + "/tokenizer/" if base else "tokenizer/"):
        for name in ("tokenizer.pkl", "tokenizer.json"):
            if folder + name in names:
                return [folder + name]
    return []


def _resolves(endpoint: str) -> bool:
    """A quick DNS check, so an offline machine goes to the cache at once instead of through the Hub
    client's retries (about 20 s)."""
    try:
        socket.getaddrinfo(urlparse(endpoint).hostname, 443)
        return True
    except OSError:
        return False


def download(spec: str, step=None) -> Path:
    """Fetch what is needed (or find it in the cache) and return the local snapshot folder."""
    import huggingface_hub as hf
    from huggingface_hub import constants

    repo, revision = parse(spec)
    online_error = None
    if not constants.HF_HUB_OFFLINE:
        try:
            if not _resolves(constants.ENDPOINT):
                raise ConnectionError(f"cannot resolve {urlparse(constants.ENDPOINT).hostname}")
            names = hf.list_repo_files(repo, revision=revision)
            paths = [hf.hf_hub_download(repo, name, revision=revision) for name in files_to_fetch(names, step)]
            return Path(paths[0]).parent  # the model's folder: resolve() finds meta and tokenizer from there
        except CheckpointError:
            raise
        except Exception as e:  # offline, DNS, proxy, 5xx: fall back to the cache below
            online_error = e
    try:
        return Path(hf.snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:
        why = f" and the Hub could not be reached ({type(online_error).__name__})" if online_error else ""
        raise CheckpointError(
            f"hf:{spec} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}){why}. "
            "Connect to the internet once to download it, or point HF_HUB_CACHE at a cache that has it."
        ) from None
