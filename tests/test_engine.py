"""Engine and Chatbot: sampling controls, seeds, batched samples, stop tokens, the calculator tool, long chats."""

from __future__ import annotations

import logging

import pytest
import torch

import nanochat_py as nc
from conftest import G5
from nanochat_py.engine import Engine
from nanochat_py.kv_cache import KVCache
from nanochat_py.sampling import sample_next


@pytest.fixture(scope="module")
def bot() -> nc.Chatbot:
    return nc.load(G5 / "model", device="cpu")


PROMPT = [1015, 1016, 300, 301, 302, 1017, 1018]


# --- sampling -------------------------------------------------------------------------------------------
def test_same_seed_same_output_and_different_seeds_differ(bot):
    a = bot.generate(PROMPT, max_tokens=40, temperature=1.0, seed=123)
    assert a == bot.generate(PROMPT, max_tokens=40, temperature=1.0, seed=123)
    assert a != bot.generate(PROMPT, max_tokens=40, temperature=1.0, seed=124)


def test_top_k_1_and_tiny_top_p_are_greedy(bot):
    greedy = bot.generate(PROMPT, max_tokens=30, temperature=0)
    assert bot.generate(PROMPT, max_tokens=30, temperature=1.0, top_k=1, seed=5) == greedy
    assert bot.generate(PROMPT, max_tokens=30, temperature=1.0, top_p=1e-6, seed=5) == greedy


def test_top_k_and_top_p_keep_only_their_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, -1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, g, 1.0, top_k=2).tolist()) == {0, 1}
    assert set(sample_next(logits, g, 1.0, top_p=0.7).tolist()) == {0, 1}  # 0.5 alone < 0.7 <= 0.5 + 0.3
    assert set(sample_next(logits, g, 1.0, top_p=0.5).tolist()) == {0}
    counts = torch.bincount(sample_next(logits, g, 1.0), minlength=4) / 2000
    assert torch.allclose(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.05)


def test_top_k_draws_match_the_reference_recipe():
    """nanochat samples top-k as softmax(topk values / T) and one multinomial draw; same seed, same tokens."""
    logits = torch.randn(4, 1024)
    ours = sample_next(logits, torch.Generator().manual_seed(7), temperature=0.8, top_k=50)
    values, indices = torch.topk(logits, 50, dim=-1)
    choice = torch.multinomial(torch.softmax(values / 0.8, dim=-1), 1, generator=torch.Generator().manual_seed(7))
    assert ours.tolist() == indices.gather(1, choice)[:, 0].tolist()


def test_bad_sampling_values_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(1, 4), None, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(torch.zeros(1, 4), None, top_p=0)


def test_several_samples_decode_as_one_batch(bot):
    greedy = bot.generate(PROMPT, max_tokens=25, temperature=0)
    assert bot.sample(PROMPT, 3, max_tokens=25, temperature=0) == [greedy] * 3
    rows = bot.sample(PROMPT, 4, max_tokens=25, temperature=1.0, seed=9)
    assert len({tuple(r) for r in rows}) > 1  # rows sample independently
    assert rows == bot.sample(PROMPT, 4, max_tokens=25, temperature=1.0, seed=9)


# --- a scripted model to drive the engine's state machine -------------------------------------------------
class ScriptedModel:
    """Stands in for GPT: whatever it is fed, step k's logits pick script[k]; it records what it was fed."""

    def __init__(self, script: list[int], vocab_size: int = 1024, sequence_len: int = 256):
        self.script = script
        self.config = nc.ModelConfig(sequence_len=sequence_len, vocab_size=vocab_size, n_layer=1, n_head=1,
                                     n_kv_head=1, n_embd=4)  # fmt: skip
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.fed: list[list[int]] = []

    def new_cache(self, batch_size: int, capacity: int) -> KVCache:
        return KVCache(1, batch_size, 1, 4, capacity)

    def __call__(self, ids, cache=None, last_only=False):
        if cache.pos == 0:  # a new generation starts its script over
            self.fed = []
        self.fed.append(ids[0].tolist())
        cache.advance(ids.shape[1])
        step = len(self.fed) - 1
        logits = torch.zeros(ids.shape[0], 1, self.config.vocab_size)
        logits[:, :, self.script[min(step, len(self.script) - 1)]] = 10.0
        return logits


@pytest.fixture(scope="module")
def tok(bot):
    return bot.tokenizer


def _run(tok, script, **kw):
    model = ScriptedModel(script)
    steps = list(Engine(model, tok).generate(PROMPT, temperature=0, **kw))
    return model, [s.tokens[0] for s in steps], [s.forced[0] for s in steps]


def test_calculator_call_forces_its_answer(tok):
    sp = tok.special
    call = [sp("<|python_start|>"), *tok.encode("12*7"), sp("<|python_end|>")]
    tail = tok.encode(" so it is")
    model, tokens, forced = _run(tok, [*call, 7, 7, 7, 7, *tail, sp("<|assistant_end|>")], max_tokens=40)
    answer = [sp("<|output_start|>"), *tok.encode("84"), sp("<|output_end|>")]
    assert tokens[: len(call) + len(answer)] == call + answer
    assert forced[: len(call) + len(answer)] == [False] * len(call) + [True] * len(answer)
    assert [t[0] for t in model.fed[1 : 1 + len(call) + len(answer)]] == call + answer  # forced tokens were fed


def test_forced_tokens_count_toward_max_tokens(tok):
    sp = tok.special
    call = [sp("<|python_start|>"), *tok.encode("2+2"), sp("<|python_end|>")]
    _, tokens, _ = _run(tok, [*call, 5, 5, 5, 5, 5], max_tokens=len(call) + 2)
    assert tokens == [*call, sp("<|output_start|>"), tok.encode("4")[0]]


@pytest.mark.parametrize("expression", ["__import__('os')", "2**99", "1/0"])
def test_calculator_declines_without_output(tok, expression):
    sp = tok.special
    call = [sp("<|python_start|>"), *tok.encode(expression), sp("<|python_end|>")]
    _, tokens, forced = _run(tok, [*call, 9, sp("<|assistant_end|>")], max_tokens=40)
    assert tokens == [*call, 9, sp("<|assistant_end|>")]
    assert not any(forced)


def test_tools_can_be_switched_off(tok):
    sp = tok.special
    call = [sp("<|python_start|>"), *tok.encode("1+1"), sp("<|python_end|>")]
    _, tokens, forced = _run(tok, [*call, sp("<|assistant_end|>")], max_tokens=40, use_tools=False)
    assert tokens == [*call, sp("<|assistant_end|>")] and not any(forced)


@pytest.mark.parametrize("stop", ["<|assistant_end|>", "<|bos|>"])
def test_stop_tokens_end_the_reply_and_are_not_returned(tok, stop):
    model = ScriptedModel([*tok.encode("Hi there"), tok.special(stop), 42, 42])
    bot = nc.Chatbot(model, tok)
    assert bot.generate(PROMPT, max_tokens=20, temperature=0) == tok.encode("Hi there")
    assert bot.chat([{"role": "user", "content": "hello"}], temperature=0) == "Hi there"


def test_chat_shows_tool_calls_apart_from_text(tok):
    sp = tok.special
    script = [*tok.encode("Let me see. "), sp("<|python_start|>"), *tok.encode("12*7"), sp("<|python_end|>"),
              0, 0, 0, 0, *tok.encode(" It is 84."), sp("<|assistant_end|>")]  # fmt: skip
    bot = nc.Chatbot(ScriptedModel(script), tok)
    messages = [{"role": "user", "content": "What is 12*7?"}]
    pieces = list(bot.reply(messages, temperature=0))
    joined = {}
    for p in pieces:
        joined[p.kind] = joined.get(p.kind, "") + p.text
    assert joined == {"text": "Let me see.  It is 84.", "python": "12*7", "python_output": "84"}
    assert bot.chat(messages, temperature=0) == "Let me see. [calculator: 12*7 = 84] It is 84."
    assert "".join(bot.chat(messages, stream=True, temperature=0)) == bot.chat(messages, temperature=0)


def test_stream_never_splits_a_character(tok):
    text = "emoji 🤖🦄 and 日本語"
    bot = nc.Chatbot(ScriptedModel([*tok.encode(text), tok.special("<|assistant_end|>")]), tok)
    pieces = list(bot.chat([{"role": "user", "content": "x"}], stream=True, temperature=0))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


# --- context length -------------------------------------------------------------------------------------
def test_long_chat_drops_oldest_turns_with_a_notice(bot, caplog):
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(40):
        messages += [{"role": "user", "content": f"question number {i} about things"},
                     {"role": "assistant", "content": f"answer number {i}"}]  # fmt: skip
    messages.append({"role": "user", "content": "the final question"})
    with caplog.at_level(logging.WARNING, logger="nanochat_py"):
        prompt = bot.prompt_for(messages, reserve=64)
        reply = bot.chat(messages, max_tokens=64, temperature=0)
    assert isinstance(reply, str)
    assert len(prompt) <= bot.config.sequence_len - 64
    text = bot.tokenizer.decode(prompt)
    assert text.endswith("the final question<|user_end|><|assistant_start|>")
    assert "question number 0 " not in text and "question number 39" in text
    assert "oldest messages" in caplog.text


def test_one_message_longer_than_the_context_keeps_its_end(bot, caplog):
    huge = "word " * 2000 + "THE END"
    with caplog.at_level(logging.WARNING, logger="nanochat_py"):
        prompt = bot.prompt_for([{"role": "user", "content": huge}], reserve=32)
        reply = bot.chat([{"role": "user", "content": huge}], max_tokens=500, temperature=0)
    assert len(prompt) <= bot.config.sequence_len - 32
    assert prompt[0] == bot.tokenizer.bos_token_id
    assert bot.tokenizer.decode(prompt).endswith("THE END<|user_end|><|assistant_start|>")
    assert isinstance(reply, str)  # generation stops when the context is full instead of crashing
    assert "last message is longer" in caplog.text


def test_engine_refuses_a_prompt_that_fills_the_context(bot):
    with pytest.raises(ValueError, match="context is 256"):
        list(bot.engine.generate([1] * 256))
