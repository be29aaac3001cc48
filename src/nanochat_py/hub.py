"""`hf:<owner>/<repo>[@revision]` sources, through huggingface_hub's cache.

Only the files a load needs are downloaded (one checkpoint, its meta, the tokenizer), with the Hub's
progress bars. Once cached, a source loads with no network (HF_HUB_OFFLINE=1 or simply offline).
"""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError
from .sources import meta_name_for, pick_model_file


def parse(spec: str) -> tuple[str, str | None]:
    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise CheckpointError(f"hf:{spec} is not a Hugging Face repo; write hf:<owner>/<repo>[@revision]")
    return repo, revision or None


def files_to_fetch(names: list[str], step=None) -> list[str]:
    """The subset of a repo's files one load needs."""
    model = pick_model_file(names, step)
    if model is not None:  # nanochat's own layout: exact, and what nanochat repos ship
        wanted = [model, meta_name_for(model)]
        tokenizer = ["tokenizer.pkl"] if "tokenizer.pkl" in names else ["tokenizer.json"]
        return [n for n in wanted + tokenizer if n in names]
    if "config.json" in names:
        weights = [n for n in names if n.endswith(".safetensors") and "/" not in n]
        extras = ["config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer.pkl"]
        return weights + [n for n in extras if n in names]
    raise CheckpointError(
        "no nanochat checkpoint in this repo: expected model_<step>.pt + meta json, or config.json + *.safetensors"
    )


def download(spec: str, step=None) -> Path:
    """Fetch what is needed (or find it in the cache) and return the local snapshot folder."""
    import huggingface_hub as hf
    from huggingface_hub import constants

    repo, revision = parse(spec)
    if not constants.HF_HUB_OFFLINE:
        try:
            names = hf.list_repo_files(repo, revision=revision)
            paths = [hf.hf_hub_download(repo, name, revision=revision) for name in files_to_fetch(names, step)]
            return Path(paths[0]).parent
        except CheckpointError:
            raise
        except Exception as e:  # offline, DNS, proxy, 5xx: fall back to the cache below
            online_error = e
    else:
        online_error = None
    try:
        return Path(hf.snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:
        why = f" and the Hub could not be reached ({type(online_error).__name__})" if online_error else ""
        raise CheckpointError(
            f"hf:{spec} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}){why}. "
            "Connect to the internet once to download it, or point HF_HUB_CACHE at a cache that has it."
        ) from None
