"""nanochat_py.load: every on-disk layout, hf: sources through the cache, overrides, and strict, clear errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import nanochat_py as nc
from conftest import G0, G5, TOKENIZER_65K
from nanochat_py import hub
from nanochat_py.checkpoint import read_tensors

IDS = torch.arange(3, 60)[None] * 7 % 1024


def logits(bot: nc.Chatbot) -> torch.Tensor:
    with torch.no_grad():
        return bot.model(IDS)


def flat_copy(src: Path, dst: Path, state: dict | None = None, meta: dict | None = None) -> Path:
    """A flat checkpoint dir like the fixtures, optionally with another state dict or meta."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "model" / "tokenizer.pkl", dst)
    torch.save(state if state is not None else read_tensors(src / "model" / "model_000042.pt"), dst / "model_000042.pt")
    meta = meta if meta is not None else json.loads((src / "model" / "meta_000042.json").read_text())
    (dst / "meta_000042.json").write_text(json.dumps(meta))
    return dst


def g5_state() -> dict:
    return read_tensors(G5 / "model" / "model_000042.pt")


# --- layouts --------------------------------------------------------------------------------------------
def make_base_dir(base: Path) -> Path:
    """$NANOCHAT_BASE_DIR layout: tokenizer/ and <phase>_checkpoints/<tag>/model_<step>.pt (G0 at step 10, G5 at 42)."""
    (base / "tokenizer").mkdir(parents=True)
    shutil.copy(G0 / "model" / "tokenizer.pkl", base / "tokenizer")
    for phase in ("base", "chatsft"):
        for tag in ("d4", "d10"):
            d = base / f"{phase}_checkpoints" / tag
            d.mkdir(parents=True)
            for fixture, step in ((G0, 10), (G5, 42)):
                shutil.copy(fixture / "model" / "model_000042.pt", d / f"model_{step:06d}.pt")
                shutil.copy(fixture / "model" / "meta_000042.json", d / f"meta_{step:06d}.json")
    return base


def test_base_dir_picks_sft_phase_largest_tag_and_last_step(tmp_path):
    base = make_base_dir(tmp_path / "nanochat")
    bot = nc.load(base, device="cpu")
    assert bot.config.generation == "G5"  # step 42
    assert bot.source == str(base)
    assert nc.load(base, device="cpu", step=10).config.generation == "G0"
    torch.testing.assert_close(logits(nc.load(base, device="cpu", phase="base")), logits(bot), atol=0, rtol=0)


def test_base_dir_prefers_numerically_largest_tag(tmp_path):
    base = make_base_dir(tmp_path / "nanochat")
    shutil.rmtree(base / "chatsft_checkpoints" / "d10")
    (base / "chatsft_checkpoints" / "d4" / "model_000042.pt").unlink()  # d4 now only has the G0 step
    shutil.copytree(base / "chatsft_checkpoints" / "d4", base / "chatsft_checkpoints" / "d2")
    shutil.copytree(base / "base_checkpoints" / "d10", base / "chatsft_checkpoints" / "d10")  # d10 > d4 > d2
    assert nc.load(base, device="cpu").config.generation == "G5"
    assert nc.load(base, device="cpu", tag="d4").config.generation == "G0"


def test_checkpoint_dir_inside_base_dir_finds_the_base_tokenizer(tmp_path):
    base = make_base_dir(tmp_path / "nanochat")
    bot = nc.load(base / "chatsft_checkpoints" / "d4", device="cpu")
    assert Path(bot.tokenizer.source) == base / "tokenizer" / "tokenizer.pkl"


def test_no_source_uses_nanochat_base_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(make_base_dir(tmp_path / "nanochat")))
    assert nc.load(device="cpu").config.generation == "G5"
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "empty"))
    assert nc.load(device="cpu").source.endswith("default_model")  # no nanochat checkpoints: the built-in model
    (tmp_path / "started" / "base_checkpoints" / "d20").mkdir(parents=True)  # a nanochat run that saved nothing yet
    (tmp_path / "started" / "tokenizer").mkdir()
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "started"))
    assert nc.load(device="cpu").source.endswith("default_model")
    monkeypatch.setattr("nanochat_py.loader.DEFAULT_MODEL_DIR", tmp_path / "no-model")
    with pytest.raises(nc.CheckpointError, match="no source given.*make model"):
        nc.load()


def test_model_file_path_and_native_safetensors_give_identical_logits(tmp_path):
    want = logits(nc.load(G5 / "model", device="cpu"))
    torch.testing.assert_close(logits(nc.load(G5 / "model" / "model_000042.pt", device="cpu")), want, atol=0, rtol=0)
    # the Antigma layout: model_d20.safetensors + meta_d20.json + tokenizer.pkl
    d = tmp_path / "antigma"
    d.mkdir()
    save_file(g5_state(), d / "model_d20.safetensors")
    shutil.copy(G5 / "model" / "meta_000042.json", d / "meta_d20.json")
    shutil.copy(G5 / "model" / "tokenizer.pkl", d)
    torch.testing.assert_close(logits(nc.load(d, device="cpu")), want, atol=0, rtol=0)


def test_compiled_bf16_checkpoint_runs_in_fp32_by_default(tmp_path):
    state = {}
    for k, v in g5_state().items():  # what a torch.compile'd model trained in bf16 saves
        state["_orig_mod." + k] = v.bfloat16() if k.startswith(("transformer.wte", "value_embeds")) else v
    bot = nc.load(flat_copy(G5, tmp_path / "bf16", state), device="cpu")
    assert bot.model.dtype == torch.float32
    upcast = {k.removeprefix("_orig_mod."): v.float() for k, v in state.items()}
    reference = nc.load(flat_copy(G5, tmp_path / "fp32", upcast), device="cpu")
    torch.testing.assert_close(logits(bot), logits(reference), atol=0, rtol=0)
    low = nc.load(tmp_path / "bf16", device="cpu", dtype="bf16")
    assert low.model.dtype == torch.bfloat16
    assert logits(low).dtype == torch.float32
    assert (logits(low) - logits(bot)).abs().max() < 0.5  # bf16 arithmetic, same model


def test_g3_softcap_override_and_meta(tmp_path):
    state = {k: v for k, v in g5_state().items() if not k.startswith(("smear", "backout"))}
    for k in [k for k in state if k.endswith("ve_gate.weight")]:
        state[k] = torch.randn(state[k].shape[0], 32)  # G2/G3 gates read 32 channels
    meta = json.loads((G5 / "model" / "meta_000042.json").read_text())
    g2 = nc.load(flat_copy(G5, tmp_path / "g2", state, meta), device="cpu")
    assert (g2.config.generation, g2.config.softcap) == ("G2", 15.0)
    g3 = nc.load(tmp_path / "g2", device="cpu", softcap=20)
    assert (g3.config.generation, g3.config.softcap) == ("G3", 20)
    meta["model_config"]["softcap"] = 20
    from_meta = nc.load(flat_copy(G5, tmp_path / "g3", state, meta), device="cpu")
    assert from_meta.config.generation == "G3"
    torch.testing.assert_close(logits(from_meta), logits(g3), atol=0, rtol=0)
    assert not torch.allclose(logits(g3), logits(g2))


def test_save_checkpoint_round_trip(tmp_path):
    bot = nc.load(G5 / "model", device="cpu")
    nc.save_checkpoint(bot.model, tmp_path / "saved", step=7)  # the model knows its tokenizer: saved beside it
    again = nc.load(tmp_path / "saved", device="cpu")
    assert again.config == bot.config
    torch.testing.assert_close(logits(again), logits(bot), atol=0, rtol=0)
    assert again.tokenizer.encode("hello there") == bot.tokenizer.encode("hello there")


def test_saved_files_are_readable_by_others(tmp_path):
    umask = os.umask(0o022)
    try:
        bot = nc.load(G5 / "model", device="cpu")
        nc.save_checkpoint(bot.model, tmp_path / "pt", step=1)
        nc.save_checkpoint(bot.model, tmp_path / "st", step=1, fmt="safetensors", dtype=torch.bfloat16)
    finally:
        os.umask(umask)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"model_000001.pt", "model_000001.safetensors", "tokenizer.pkl"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o644" for p in files}


# --- hf: sources ----------------------------------------------------------------------------------------
def test_files_to_fetch_takes_only_what_a_load_needs():
    names = ["README.md", "model_000100.pt", "model_000200.pt", "meta_000100.json", "meta_000200.json",
             "optim_000200_rank0.pt", "tokenizer.pkl", "token_bytes.pt"]  # fmt: skip
    assert hub.files_to_fetch(names) == ["model_000200.pt", "meta_000200.json", "tokenizer.pkl"]
    assert hub.files_to_fetch(names, step=100) == ["model_000100.pt", "meta_000100.json", "tokenizer.pkl"]
    hf_names = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"]
    assert sorted(hub.files_to_fetch(hf_names)) == ["config.json", "model.safetensors", "tokenizer.json"]
    with pytest.raises(nc.CheckpointError, match="no nanochat checkpoint"):
        hub.files_to_fetch(["README.md"])
    nested = ["README.md", "tokenizer/tokenizer.pkl", "chatsft_checkpoints/d32/model_000650.pt",
              "chatsft_checkpoints/d32/meta_000650.json", "chatsft_checkpoints/d12/model_000700.pt",
              "base_checkpoints/d32/model_021400.pt"]  # fmt: skip
    assert hub.files_to_fetch(nested) == [
        "chatsft_checkpoints/d32/model_000650.pt",
        "chatsft_checkpoints/d32/meta_000650.json",
        "tokenizer/tokenizer.pkl",
    ]
    assert hub.files_to_fetch(["tokenizer/tokenizer.pkl", "model_000001.pt", "meta_000001.json"])[2] == (
        "tokenizer/tokenizer.pkl"
    )


def make_hf_cache(cache: Path, repo: str, files: dict[str, Path], revision: str = "main") -> Path:
    """The folder layout huggingface_hub's cache uses: models--o--r/{refs/<rev>, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / revision).write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snapshot / name)
    return snapshot


def test_hf_source_loads_offline_from_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    files = {n: G5 / "model" / n for n in ("model_000042.pt", "meta_000042.json", "tokenizer.pkl")}
    make_hf_cache(tmp_path / "hub", "karpathy/nanochat-test", files)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    bot = nc.load("hf:karpathy/nanochat-test", device="cpu")
    torch.testing.assert_close(logits(bot), logits(nc.load(G5 / "model", device="cpu")), atol=0, rtol=0)
    assert nc.load("hf:karpathy/nanochat-test@main", device="cpu").config.generation == "G5"
    with pytest.raises(nc.CheckpointError, match="not in the local Hugging Face cache"):
        nc.load("hf:karpathy/not-cached")
    with pytest.raises(nc.CheckpointError, match="hf:<owner>/<repo>"):
        nc.load("hf:just-a-name")


def test_hf_source_downloads_only_needed_files(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_resolves", lambda endpoint: True)  # this machine has no route to the Hub
    repo_files = {name: G5 / "model" / name for name in ("model_000042.pt", "meta_000042.json", "tokenizer.pkl")}
    repo_files |= {"optim_000042_rank0.pt": G5 / "expected.npz", "token_bytes.pt": G5 / "expected.npz"}
    fetched = []

    def fake_download(repo, name, revision=None):
        fetched.append(name)
        (tmp_path / "dl").mkdir(exist_ok=True)
        return str(shutil.copy(repo_files[name], tmp_path / "dl" / name))

    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo, revision=None: list(repo_files))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert nc.load("hf:someone/nanochat-d4", device="cpu").config.generation == "G5"
    assert sorted(fetched) == ["meta_000042.json", "model_000042.pt", "tokenizer.pkl"]


# --- strict errors --------------------------------------------------------------------------------------
def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path):
    state = g5_state()
    del state["transformer.h.1.mlp.c_fc.weight"]
    state["transformer.h.9.attn.c_q.weight"] = torch.zeros(64, 64)
    state["transformer.h.0.attn.c_k.weight"] = torch.zeros(64, 64)
    d = flat_copy(G5, tmp_path / "bad", state)
    with pytest.raises(nc.CheckpointError) as err:
        nc.load(d, device="cpu")
    message = str(err.value)
    assert str(d / "model_000042.pt") in message
    assert "missing tensors: transformer.h.1.mlp.c_fc.weight" in message
    assert "unexpected tensors: transformer.h.9.attn.c_q.weight" in message
    assert "mis-shaped tensors: transformer.h.0.attn.c_k.weight (64, 64) (expected (32, 64))" in message


def test_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path):
    with pytest.raises(nc.CheckpointError, match="65536 tokens but the model .* was built for 1024"):
        nc.load(G0 / "model", device="cpu", tokenizer=TOKENIZER_65K)


def test_engram_variant_is_refused_by_name(tmp_path):
    state = g5_state() | {"bigram_embed.embed.weight": torch.zeros(8, 64), "bigram_lambdas": torch.zeros(4)}
    with pytest.raises(nc.CheckpointError, match="engram"):
        nc.load(flat_copy(G5, tmp_path / "engram", state), device="cpu")


def _touch(path: Path) -> Path:
    path.write_text("")
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda tmp: tmp / "nope", "does not exist"),
        (lambda tmp: tmp, "no checkpoint in"),
        (lambda tmp: _touch(tmp / "x.bin"), "not a checkpoint"),
    ],
)
def test_bad_sources_say_what_to_pass(tmp_path, make, match):
    with pytest.raises(nc.CheckpointError, match=match):
        nc.load(make(tmp_path), device="cpu")


def test_unknown_override_and_bad_dtype_are_refused():
    with pytest.raises(nc.CheckpointError, match="unknown config override.*softcapp"):
        nc.load(G0 / "model", device="cpu", softcapp=20)
    with pytest.raises(nc.NanochatError, match="unknown dtype"):
        nc.load(G0 / "model", device="cpu", dtype="fp8")
    with pytest.raises(nc.NanochatError, match="unknown device 'gpu0'"):
        nc.load(G0 / "model", device="gpu0")


def test_fp16_is_refused_and_says_what_runs():
    for dtype in ("fp16", "float16", torch.float16):
        with pytest.raises(nc.NanochatError, match="fp16 is not supported.*use bf16"):
            nc.load(G0 / "model", device="cpu", dtype=dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_a_clear_error():
    with pytest.raises(nc.NanochatError, match="sees no CUDA GPU"):
        nc.load(G0 / "model", device="cuda")


def test_meta_without_shapes_names_the_file(tmp_path):
    d = flat_copy(G0, tmp_path / "nometa", meta={"step": 42, "model_config": {"vocab_size": 1024}})
    with pytest.raises(nc.CheckpointError, match="lacks n_layer, n_head, n_kv_head, n_embd, sequence_len"):
        nc.load(d, device="cpu")


def test_unreachable_hub_goes_straight_to_the_cache(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants as constants

    files = {n: G5 / "model" / n for n in ("model_000042.pt", "meta_000042.json", "tokenizer.pkl")}
    make_hf_cache(tmp_path / "hub", "karpathy/nanochat-test", files)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_resolves", lambda endpoint: False)

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub client was called although the Hub host does not resolve")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", no_network)
    assert nc.load("hf:karpathy/nanochat-test", device="cpu").config.generation == "G5"
    with pytest.raises(nc.CheckpointError, match=r"could not be reached \(ConnectionError\)"):
        nc.load("hf:karpathy/not-cached")


def test_loading_draws_no_random_weights_and_pulls_in_no_compiler():
    """A loaded model's weights all come from the file: building it on the meta device must not draw random
    ones first (torch's meta random ops import torch._dynamo, a third of a second of every cold start)."""
    import subprocess
    import sys

    code = (
        "import sys, nanochat_py as nc; bot = nc.load(sys.argv[1], device='cpu'); "
        "print(sorted(m for m in ('torch._dynamo', 'sympy', 'torch._inductor') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(G5 / "model")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
