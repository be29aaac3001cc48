"""Crafted tokenizer.pkl and model .pt files must be refused without running any of their code."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import pickle
import shutil
import subprocess
import types

import pytest
import tiktoken
import torch

import nanochat_py as nc
from conftest import G0
from nanochat_py.checkpoint import read_tensors
from nanochat_py.tokenizer import SPLIT_PATTERN


class Payload:
    """Unpickling this calls `func(*args)`: the classic pickle code-execution trick."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def touch_payloads(marker) -> dict[str, tuple[Payload, str]]:
    """Ways to create `marker` from a pickle, each with the global name the pickle asks for."""
    return {
        "os.system": (Payload(os.system, f"touch '{marker}'"), f"{os.system.__module__}.system"),
        "builtins.exec": (Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
        "subprocess.call": (Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
    }


def encoding_pickle(**attributes) -> bytes:
    """A pickled tiktoken Encoding (as nanochat writes tokenizer.pkl) whose pickled state fields are replaced."""
    enc = tiktoken.Encoding(
        name="tiny",
        pat_str=SPLIT_PATTERN,
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|bos|>": 256},
    )
    for name, value in attributes.items():  # __getstate__ reads name, _pat_str, _mergeable_ranks, _special_tokens
        setattr(enc, name, value)
    return pickle.dumps(enc)


class UnsafeStateUnpickler(pickle.Unpickler):
    """Plain pickle.load (runs anything), except that the Encoding is not built, so a bogus state cannot crash it."""

    def find_class(self, module, name):
        if (module, name) == ("tiktoken.core", "Encoding"):
            return types.SimpleNamespace
        return super().find_class(module, name)


def assert_runs_code_when_unpickled_unsafely(load, marker) -> None:
    """Proves a payload is live: the unsafe loader does create the marker (then it is removed again)."""
    with contextlib.suppress(Exception):
        load()
    assert marker.exists(), "the payload did not run even under an unsafe loader, so the test proves nothing"
    marker.unlink()


# --- tokenizer.pkl ------------------------------------------------------------------------------------------


def test_a_plain_encoding_pickle_loads(tmp_path):
    """The helper below writes files load_tokenizer accepts, so refusals come from the payloads alone."""
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(encoding_pickle())
    assert nc.load_tokenizer(path).encode("hi") == [ord("h"), ord("i")]


def assert_tokenizer_refused(tmp_path, data: bytes, global_name: str, marker) -> None:
    """load_tokenizer refuses the pickle, names what it asked for, and nothing in it ran."""
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(data)
    with pytest.raises(nc.UnsafeFileError) as err:
        nc.load_tokenizer(path)
    assert global_name in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.call"])
def test_tokenizer_pickle_that_runs_code_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload, global_name = touch_payloads(marker)[kind]
    data = pickle.dumps(payload)
    assert_tokenizer_refused(tmp_path, data, global_name, marker)
    assert_runs_code_when_unpickled_unsafely(lambda: pickle.loads(data), marker)


def test_hand_written_protocol_0_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    data = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(data)
    with pytest.raises(nc.UnsafeFileError, match=r"os\.system"):
        nc.load_tokenizer(path)
    assert not marker.exists()
    assert_runs_code_when_unpickled_unsafely(lambda: pickle.loads(data), marker)


@pytest.mark.parametrize("field", ["_special_tokens", "_mergeable_ranks", "name"])
def test_malicious_object_nested_in_the_encoding_state_is_refused(tmp_path, field):
    marker = tmp_path / "pwned"
    payload, global_name = touch_payloads(marker)["os.system"]
    nested = {
        "_special_tokens": {"<|bos|>": 256, "<|evil|>": payload},
        "_mergeable_ranks": {**{bytes([i]): i for i in range(256)}, b"ab": payload},
        "name": payload,
    }[field]
    data = encoding_pickle(**{field: nested})
    assert_tokenizer_refused(tmp_path, data, global_name, marker)
    assert_runs_code_when_unpickled_unsafely(lambda: UnsafeStateUnpickler(io.BytesIO(data)).load(), marker)


@pytest.mark.parametrize(
    "data",
    [encoding_pickle()[:100], b"", b"this is not a pickle", b"\x80\x04\x95"],
    ids=["truncated", "empty", "text", "bare-header"],
)
def test_unreadable_tokenizer_pickle_is_refused_clearly(tmp_path, data):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(data)
    with pytest.raises(nc.UnsafeFileError, match="cannot read .* as a tokenizer pickle"):
        nc.load_tokenizer(path)


@pytest.mark.parametrize(
    "attributes",
    [
        {"_mergeable_ranks": {"a": 0}},
        {"_mergeable_ranks": {b"a": "0"}},
        {"_mergeable_ranks": [b"a"]},
        {"_special_tokens": {"<|bos|>": "256"}},
        {"_special_tokens": {b"<|bos|>": 256}},
        {"_pat_str": None},
    ],
    ids=["str-rank-key", "str-rank", "ranks-list", "str-special-id", "bytes-special-name", "no-pattern"],
)
def test_encoding_state_with_wrong_types_is_refused(tmp_path, attributes):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(encoding_pickle(**attributes))
    with pytest.raises(nc.UnsafeFileError, match="unexpected contents"):
        nc.load_tokenizer(path)


def test_pickle_of_something_other_than_an_encoding_is_refused(tmp_path):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(pickle.dumps({"pat_str": SPLIT_PATTERN, "mergeable_ranks": {}, "special_tokens": {}}))
    with pytest.raises(nc.UnsafeFileError, match="does not hold a tiktoken Encoding"):
        nc.load_tokenizer(path)


@pytest.mark.parametrize("attributes", [{"_pat_str": "("}, {"_mergeable_ranks": {}}], ids=["bad-regex", "no-ranks"])
def test_encoding_state_with_unusable_values_is_a_nanochat_error(tmp_path, attributes):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(encoding_pickle(**attributes))
    with pytest.raises(nc.NanochatError):
        nc.load_tokenizer(path)


# --- model .pt ----------------------------------------------------------------------------------------------


def evil_checkpoint(path, marker, **save_kwargs) -> None:
    payload, _ = touch_payloads(marker)["os.system"]
    torch.save({"transformer.wte.weight": torch.zeros(2, 2), "extra": payload}, path, **save_kwargs)


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "model_000001.pt"
    evil_checkpoint(path, marker)
    with pytest.raises(nc.UnsafeFileError, match="refusing to load"):
        read_tensors(path)
    assert not marker.exists()
    assert_runs_code_when_unpickled_unsafely(lambda: torch.load(path, weights_only=False), marker)


def test_checkpoint_refusal_names_the_refused_global(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "model_000001.pt"
    evil_checkpoint(path, marker)
    with pytest.raises(nc.UnsafeFileError, match=rf"{os.system.__module__}\.system"):
        read_tensors(path)


def test_legacy_format_checkpoint_that_runs_code_is_refused(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "model_000001.pt"
    evil_checkpoint(path, marker, _use_new_zipfile_serialization=False)
    with pytest.raises(nc.NanochatError):
        read_tensors(path)
    assert not marker.exists()
    assert_runs_code_when_unpickled_unsafely(lambda: torch.load(path, weights_only=False), marker)


def flat_checkpoint_dir(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for name in ("meta_000042.json", "tokenizer.pkl"):
        shutil.copy(G0 / "model" / name, folder / name)
    return folder


def test_flat_dir_with_the_real_weights_loads(tmp_path):
    """Control for the next test: this directory layout loads when the weights are honest."""
    folder = flat_checkpoint_dir(tmp_path)
    shutil.copy(G0 / "model" / "model_000042.pt", folder / "model_000042.pt")
    assert nc.load(folder, device="cpu").tokenizer.vocab_size == 1024


def test_load_of_a_flat_dir_with_a_malicious_checkpoint_is_refused(tmp_path):
    folder = flat_checkpoint_dir(tmp_path)
    marker = tmp_path / "pwned"
    evil_checkpoint(folder / "model_000042.pt", marker)
    with pytest.raises(nc.UnsafeFileError):
        nc.load(folder, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [[torch.zeros(2), torch.ones(3)], {"w": torch.zeros(2), "step": 3}, torch.zeros(4)],
    ids=["list-of-tensors", "dict-with-an-int", "bare-tensor"],
)
def test_checkpoint_that_is_not_a_state_dict_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "model_000001.pt"
    torch.save(content, path)
    with pytest.raises(nc.CheckpointError, match="state dict"):
        read_tensors(path)
