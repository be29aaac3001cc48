"""Read nanochat's tokenizer.pkl without running code from it.

The file is a pickled `tiktoken.core.Encoding`. Plain `pickle.load` would import and call whatever the
file names, so a crafted file could run anything. This unpickler admits exactly one class name, maps it
to an inert stand-in that only keeps the pickled state, and refuses everything else before it runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from .errors import UnsafeFileError


class _EncodingState:
    """Takes the place of tiktoken.core.Encoding while unpickling: it stores the state and does nothing else."""

    def __setstate__(self, state) -> None:
        self.state = state


class _TokenizerUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) == ("tiktoken.core", "Encoding"):
            return _EncodingState
        raise UnsafeFileError(
            f"refusing to load {self.path}: its pickle asks for {module}.{name}, but a tokenizer.pkl may only hold "
            "a tiktoken Encoding. Nothing from the file was run. Use a tokenizer.pkl written by nanochat, or a "
            "tokenizer.json."
        )


def read_tiktoken_state(path: str | Path) -> dict:
    """The {name, pat_str, mergeable_ranks, special_tokens} a nanochat tokenizer.pkl holds, validated."""
    path = Path(path)
    try:
        obj = _TokenizerUnpickler(io.BytesIO(path.read_bytes()), path).load()
    except UnsafeFileError:
        raise
    except Exception as e:  # truncated, not a pickle, wrong protocol...
        raise UnsafeFileError(f"cannot read {path} as a tokenizer pickle: {e}") from None
    state = getattr(obj, "state", None)
    if not isinstance(obj, _EncodingState) or not isinstance(state, dict):
        raise UnsafeFileError(f"{path} does not hold a tiktoken Encoding (found {type(obj).__name__})")
    ranks, specials = state.get("mergeable_ranks"), state.get("special_tokens")
    ok = (
        isinstance(state.get("pat_str"), str)
        and isinstance(ranks, dict)
        and all(isinstance(k, bytes) and isinstance(v, int) for k, v in ranks.items())
        and isinstance(specials, dict)
        and all(isinstance(k, str) and isinstance(v, int) for k, v in specials.items())
    )
    if not ok:
        raise UnsafeFileError(
            f"{path} holds a tiktoken Encoding with unexpected contents; expected pat_str, "
            "mergeable_ranks (bytes -> int) and special_tokens (str -> int)"
        )
    return state
