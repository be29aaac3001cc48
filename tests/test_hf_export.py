"""`nanochat-py export --format transformers`: every generation's fixture, exported, runs in transformers as it
runs in nanochat-py (logits, greedy generations, chat prompts), in the ways serving engines drive it (eager and
sdpa attention, a KV cache, left-padded batches), and loads back into nanochat_py.load exactly."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import nanochat_py as nc
from conftest import G0, G5, PARITY, TOKENIZER_65K, expected, parity_dirs, random_model
from nanochat_py.cli import main
from nanochat_py.hf_export import export_transformers
from nanochat_py.hf_export.tokenizer_files import tokenizer_json

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

FIXTURES = parity_dirs()
IDS = [p.name for p in FIXTURES]


_SHARED = {"g_2c4473d": "G0", "g_92d63d4": "G5"}  # the two shared fixtures' expected.json does not say


def _gen_of(name: str) -> str:
    return _SHARED.get(name) or expected(PARITY / name)["generation"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """name -> (the fixture as nanochat-py loads it, its fp32 transformers export), exported once per run."""
    made = {}

    def get(name: str):
        if name not in made:
            fixture = PARITY / name
            bot = nc.load(fixture / "model", device="cpu", dtype="fp32", **expected(fixture).get("overrides", {}))
            made[name] = bot, export_transformers(bot, tmp_path_factory.mktemp(name), torch.float32)
        return made[name]

    return get


def _hf_model(directory, attn: str = "sdpa"):
    return transformers.AutoModelForCausalLM.from_pretrained(
        directory, trust_remote_code=True, dtype=torch.float32, attn_implementation=attn
    ).eval()


def _hf_greedy(model, prompt: list[int], max_tokens: int, **kwargs) -> list[int]:
    """transformers' greedy continuation, without the stop token it ends on (nanochat-py leaves it out)."""
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False, **kwargs)
    new = out[0, len(prompt) :].tolist()
    return new[:-1] if new and new[-1] in model.generation_config.eos_token_id else new


def _sequences(fixture) -> list[torch.Tensor]:
    data = np.load(fixture / "expected.npz")
    return [torch.from_numpy(data[f"seq{n}_ids"])[None] for n in (5, 60, 200)]


@pytest.mark.parametrize("name", IDS)
def test_logits_match_nanochat_py_and_the_reference(exports, name):
    bot, directory = exports(name)
    model = _hf_model(directory)
    data = np.load(PARITY / name / "expected.npz")
    for ids in _sequences(PARITY / name):
        with torch.no_grad():
            theirs, ours = model(ids).logits, bot.model(ids)
        reference = torch.from_numpy(data[f"seq{ids.shape[1]}_logits"])
        assert (theirs - ours).abs().max() <= 1e-4
        assert (theirs[0] - reference).abs().max() <= 1e-4
        assert theirs.abs().max() > 1.0  # not two near-zero tensors
    expected_class = "NanoChatForCausalLM" if _gen_of(name) == "G0" else "NanoChatGPTForCausalLM"
    assert type(model).__name__ == expected_class


@pytest.mark.parametrize("name", IDS)
def test_greedy_generate_matches_ours_token_for_token(exports, name):
    bot, directory = exports(name)
    model = _hf_model(directory)
    for generation in expected(PARITY / name)["generations"].values():
        prompt = generation["prompt"]
        ours = bot.generate(prompt, max_tokens=60, temperature=0, use_tools=False)
        assert _hf_greedy(model, prompt, 60) == ours
        assert len(ours) >= len(generation["completion"]) - 1  # the long prompts run past the short window


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", ["g_2c4473d_mqa", "g_aa530cd", "g_fbc1484", "g_a91743c", "g_92d63d4_mqa_l5"])
def test_cache_and_left_padding_give_the_unpadded_logits(exports, name, attn):
    """What a serving engine does: decode with a KV cache, batch sequences of different lengths left-padded
    with an attention mask. Every row must compute what it computes alone, past the 128-token window too."""
    bot, directory = exports(name)
    model = _hf_model(directory, attn)
    ids = _sequences(PARITY / name)[2]  # 200 tokens
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        assert (full - bot.model(ids)).abs().max() <= 1e-4
        cache = transformers.DynamicCache(config=model.config)
        steps = [model(ids[:, :100], cache=cache, use_cache=True).logits]
        steps += [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(100, 200)]
        assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-4

        short, long = ids[0, :90], ids[0, :170]
        pad = model.generation_config.pad_token_id
        batch = torch.stack([torch.cat([torch.full((80,), pad), short]), long])
        mask = torch.stack([torch.cat([torch.zeros(80), torch.ones(90)]), torch.ones(170)]).long()
        padded = model(batch, attention_mask=mask).logits
        assert (padded[0, 80:] - full[0, :90]).abs().max() <= 1e-4
        assert (padded[1] - full[0, :170]).abs().max() <= 1e-4

    generated = model.generate(batch, attention_mask=mask, max_new_tokens=16, do_sample=False, min_new_tokens=16)
    assert generated[0, 170:].tolist() == model.generate(short[None], max_new_tokens=16, do_sample=False,
                                                         min_new_tokens=16)[0, 90:].tolist()  # fmt: skip
    no_cache = model.generate(long[None], max_new_tokens=16, do_sample=False, min_new_tokens=16, use_cache=False)
    assert generated[1, 170:].tolist() == no_cache[0, 170:].tolist()


CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
    [
        {"role": "user", "content": "What is 12*7?"},
        {"role": "assistant", "content": "84."},
        {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "13*7?"}]},
    ],
    [  # a tool call and its output, then more text, then a trailing assistant message that is dropped
        {"role": "system", "content": [{"type": "text", "text": "You can use a calculator."}]},
        {"role": "user", "content": "How many r's in strawberry?\n  Count them."},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me count. "},
                {"type": "python", "text": "'strawberry'.count('r')"},
                {"type": "python_output", "text": "3"},
                {"type": "text", "text": "There are 3."},
            ],
        },
        {"role": "user", "content": "  Thanks! 日本語 🤖  "},
        {"role": "assistant", "content": "You're welcome"},
    ],  # fmt: skip
]


def test_chat_template_renders_like_nanochat(exports):
    bot, directory = exports("g_92d63d4")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    for conversation in [*CONVERSATIONS, expected(G5)["conversation"]]:
        ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert ids == bot.tokenizer.render_for_completion(conversation)
        if conversation[-1]["role"] == "assistant":  # the whole conversation, as nanochat trains on it
            whole = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)
            assert whole == bot.tokenizer.render_conversation(conversation)[0]
    assert tokenizer.decode(bot.tokenizer.encode("Hello world!")) == "Hello world!"
    assert tokenizer.eos_token == "<|assistant_end|>" and tokenizer.bos_token == "<|bos|>"


@pytest.mark.parametrize(
    "conversation",
    [
        [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "hi"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "system", "content": "s"}],
    ],
)
def test_chat_template_refuses_what_nanochat_refuses(exports, conversation):
    _, directory = exports("g_92d63d4")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    with pytest.raises(Exception, match="role|system|user"):
        tokenizer.apply_chat_template(conversation, add_generation_prompt=True)
    with pytest.raises(nc.ConversationError):
        nc.load_tokenizer(G5 / "model").render_for_completion(conversation)


def test_tokenizer_json_encodes_like_tiktoken():
    """The 65,536-token tokenizer of the published models, through `tokenizers` and back through nanochat-py."""
    from test_tokenizer import HARD_CASES

    tok = nc.load_tokenizer(TOKENIZER_65K)
    data = tokenizer_json(tok)
    hf = tokenizers.Tokenizer.from_str(json.dumps(data))
    cases = json.loads((TOKENIZER_65K.parent / "encodings.json").read_text())["cases"]
    for text in [*(c["text"] for c in cases), *HARD_CASES.values()]:
        ids = hf.encode(text, add_special_tokens=False).ids
        assert ids == tok.encode(text)
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)
    assert {name: hf.token_to_id(name) for name in tok.encoding._special_tokens} == tok.encoding._special_tokens


@pytest.mark.parametrize("name", IDS)
def test_export_loads_back_into_nanochat_py_exactly(exports, name):
    bot, directory = exports(name)
    back = nc.load(directory, device="cpu", dtype="fp32")
    ours, theirs = bot.config.to_dict(), back.config.to_dict()
    if _gen_of(name) == "G0":  # transformers' NanoChat config spells out float32's epsilon, nanochat's default
        assert theirs.pop("norm_eps") == torch.finfo(torch.float32).eps and ours.pop("norm_eps") is None
    assert theirs == ours
    for ids in _sequences(PARITY / name):
        with torch.no_grad():
            assert torch.equal(back.model(ids), bot.model(ids))
    assert back.tokenizer.source.endswith("tokenizer.json")
    conversation = expected(PARITY / name)["conversation"]
    assert back.tokenizer.render_conversation(conversation) == bot.tokenizer.render_conversation(conversation)


@pytest.mark.parametrize("name", [n for n in IDS if _gen_of(n) == "G0"])
def test_g0_loads_in_stock_transformers_without_remote_code(exports, name):
    _, directory = exports(name)
    assert not list(directory.glob("*.py"))
    model = transformers.AutoModelForCausalLM.from_pretrained(directory)  # trust_remote_code left at its default
    assert isinstance(model, transformers.NanoChatForCausalLM)
    assert json.loads((directory / "config.json").read_text())["model_type"] == "nanochat"


@pytest.mark.parametrize("name", [n for n in IDS if _gen_of(n) != "G0"])
def test_later_generations_need_remote_code_that_needs_only_torch_and_transformers(exports, name):
    _, directory = exports(name)
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False)
    config = transformers.AutoConfig.from_pretrained(directory, trust_remote_code=True)
    assert config.model_type == "nanochat_gpt" and config.nanochat_generation == _gen_of(name)
    base = transformers.AutoModel.from_pretrained(directory, trust_remote_code=True)  # what vLLM and SGLang build
    assert type(base).__name__ == "NanoChatGPTModel" and base.is_backend_compatible()
    for source in directory.glob("*.py"):
        imports = re.findall(r"^(?:from|import) (\S+)", source.read_text(), flags=re.M)
        assert {i.split(".")[0] for i in imports} <= {"__future__", "collections", "torch", "transformers", ""}


def test_g5_refuses_a_continuation_without_its_predecessor(exports):
    """G5's smear mixes in the previous token: without it (a suffix without its cache, or an engine that sends
    a flat batch of tokens without this model's cache) the answer would be silently wrong, so it is an error."""
    _, directory = exports("g_92d63d4")
    model = _hf_model(directory)
    ids = _sequences(PARITY / "g_92d63d4")[1]
    with torch.no_grad(), pytest.raises(ValueError, match="predecessor|before it"):
        model(ids[:, 30:], position_ids=torch.arange(30, 60)[None])
    model.config._attn_implementation = "vllm"
    with torch.no_grad(), pytest.raises(NotImplementedError, match="vllm"):
        model(ids)


def test_padded_vocabulary_rows_are_cut_to_the_tokenizer(tmp_path):
    """nanochat pads its embedding tables to a multiple of 64; the export keeps only the tokenizer's rows."""
    tokenizer = nc.load_tokenizer(G0 / "model")
    model = random_model("G5", padded_vocab_size=1088)
    directory = export_transformers(nc.Chatbot(model, tokenizer), tmp_path, torch.float32)
    hf = _hf_model(directory)
    assert hf.lm_head.weight.shape[0] == hf.model.embed_tokens.weight.shape[0] == 1024
    ids = torch.randint(0, 1024, (2, 50))
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max() <= 1e-4


def test_cli_exports_transformers_format_and_keeps_native_the_default(capfd, tmp_path):
    source = str(G5 / "model")
    for args, out in ((["--format", "transformers"], "hf"), ([], "native")):
        code = main(["export", "--source", source, "--out", str(tmp_path / out), "--dtype", "bf16", *args])
        assert code == 0, capfd.readouterr().err
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_nanochat_gpt.py"} <= {
        p.name for p in (tmp_path / "hf").iterdir()
    }
    assert list((tmp_path / "native").glob("model_*.safetensors"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    # the same bf16 weights in either layout
    ids = _sequences(G5)[1]
    with torch.no_grad():
        hf_back = nc.load(tmp_path / "hf", device="cpu", dtype="fp32").model(ids)
        assert torch.equal(hf_back, nc.load(tmp_path / "native", device="cpu", dtype="fp32").model(ids))

    # re-exporting another generation into the same directory leaves no stale remote code behind
    assert main(["export", "-s", str(G0 / "model"), "--out", str(tmp_path / "hf"), "--format", "transformers"]) == 0
    assert not list((tmp_path / "hf").glob("*.py"))
    capfd.readouterr()
    # but a directory holding another checkpoint is refused, in one line
    assert main(["export", "-s", source, "--out", str(tmp_path / "native"), "--format", "transformers"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "another checkpoint" in err and "model_000042.safetensors" in err
