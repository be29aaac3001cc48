"""Shared test helpers: fixture paths and small random models of any generation."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from nanochat_py.config import config_for
from nanochat_py.model import GPT

pytest_plugins = ["stop_on_ctrl_c"]  # a Ctrl-C stops the run even inside a test whose code catches it

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "parity"
G0 = PARITY / "g_2c4473d"
G5 = PARITY / "g_92d63d4"
TOKENIZER_65K = FIXTURES / "tokenizer-65k" / "tokenizer.pkl"


def parity_dirs() -> list[Path]:
    return sorted(p for p in PARITY.iterdir() if (p / "expected.json").is_file())


def expected(fixture: Path) -> dict:
    return json.loads((fixture / "expected.json").read_text())


SMALL = dict(sequence_len=256, vocab_size=1024, n_layer=4, n_head=4, n_kv_head=2, n_embd=64)


def random_model(generation: str, seed: int = 0, **fields) -> GPT:
    """A small model of `generation` whose every parameter (lambdas and gates included) is random and non-zero."""
    fields = {**SMALL, **({"window_pattern": "SSL"} if generation not in ("G0", "G1") else {}), **fields}
    torch.manual_seed(seed)
    model = GPT(config_for(generation, **fields))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda" in name:
                p.uniform_(0.3, 1.2)
            elif p.dim() == 2 and "wte" not in name and "value_embeds" not in name:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
            else:
                p.normal_(0.0, 1.0)
    return model.eval()


_HOME = pytest.StashKey[Path]()


def pytest_configure(config):
    """Nothing of this machine's outside the run changes what the tests see (nanochat checkpoints in
    ~/.cache/nanochat, a Hugging Face cache, the network): every process the tests start inherits this."""
    home = Path(tempfile.mkdtemp(prefix="nanochat-py-tests-"))
    os.environ["NANOCHAT_BASE_DIR"] = str(home / "nanochat")
    os.environ["HF_HOME"] = str(home / "huggingface")
    os.environ["HF_HUB_OFFLINE"] = "1"
    config.stash[_HOME] = home


def pytest_unconfigure(config):
    shutil.rmtree(config.stash.get(_HOME, ""), ignore_errors=True)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models (`pytestmark = pytest.mark.usefixtures("one_thread")`): they decode fastest on
    one thread; on a busy machine a second one mostly waits for a core (30x slower seen here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
