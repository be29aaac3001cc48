"""A transformers NanoChatForCausalLM saved with save_pretrained loads and matches transformers' own logits."""

from __future__ import annotations

import shutil

import pytest
import torch

import nanochat_py as nc
from conftest import G0

transformers = pytest.importorskip("transformers")


def _random_hf_model(n_kv_head: int) -> transformers.NanoChatForCausalLM:
    config = transformers.NanoChatConfig(
        vocab_size=1024, hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=n_kv_head, max_position_embeddings=256, final_logit_softcapping=15.0,
        bos_token_id=1015, eos_token_id=1019, pad_token_id=1019,
    )  # fmt: skip
    torch.manual_seed(n_kv_head)
    model = transformers.NanoChatForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # transformers' init leaves logits near zero; make every weight matter
            p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5 if p.dim() == 2 else 1.0)
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
    return model


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_transformers_checkpoint_matches_transformers_logits(tmp_path, n_kv_head):
    hf_model = _random_hf_model(n_kv_head)
    hf_model.save_pretrained(tmp_path)
    shutil.copy(G0 / "model" / "tokenizer.pkl", tmp_path)
    ids = torch.randint(0, 1024, (2, 120))
    with torch.no_grad():
        want = hf_model(ids).logits
    bot = nc.load(tmp_path, device="cpu")
    assert (bot.config.generation, bot.config.norm_eps, bot.config.n_kv_head) == ("G0", 1e-6, n_kv_head)
    with torch.no_grad():
        got = bot.model(ids)
    assert (got - want).abs().max() <= 1e-4
    assert want.abs().max() > 1.0  # the comparison is not between two near-zero tensors
    # and greedy decoding with our KV cache agrees with transformers' generate
    prompt = ids[:1, :20]
    hf_out = hf_model.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert bot.generate(prompt[0].tolist(), max_tokens=30, temperature=0, use_tools=False) == hf_out[0, 20:].tolist()


def test_transformers_dir_with_only_a_tokenizer_json_chats(tmp_path):
    """The layout transformers users have: config.json + model.safetensors + tokenizer.json, no pickle."""
    from test_tokenizer import tiktoken_to_hf

    from nanochat_py.safe_pickle import read_tiktoken_state

    hf_model = _random_hf_model(2)
    hf_model.save_pretrained(tmp_path)
    tiktoken_to_hf(read_tiktoken_state(G0 / "model" / "tokenizer.pkl")).save(str(tmp_path / "tokenizer.json"))
    bot = nc.load(tmp_path, device="cpu")
    assert bot.tokenizer.source.endswith("tokenizer.json")
    assert bot.tokenizer.encode("Hello world!") == nc.load_tokenizer(G0 / "model").encode("Hello world!")
    messages = [{"role": "user", "content": "hi"}]
    prompt = bot.tokenizer.render_for_completion(messages)
    with torch.no_grad():
        want = hf_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)[0, len(prompt):].tolist()  # fmt: skip
    got = bot.generate(prompt, max_tokens=12, temperature=0, use_tools=False)
    assert got == want[: len(got)] and len(got) > 0
    assert isinstance(bot.chat(messages, temperature=0, max_tokens=12), str)
