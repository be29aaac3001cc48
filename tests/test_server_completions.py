"""POST /v1/completions, logprobs on /v1/chat/completions, the sampling controls over HTTP, and the tokenizer routes.

The server runs in-process (server_harness) over the random-weight G5 fixture (256-token context); every
log-probability it sends is checked against the model's own, computed here directly with bot.model (float32,
no KV cache), and every sampled reply against the library's with the same controls and seed.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import torch
from openai import OpenAI
from server_harness import HI, SOURCE, TIMEOUT, assert_error, live_server, make_pool, stream, wait_ready

import nanochat_py as nc

TOLERANCE = 1e-4
TEXT = "The quick brown fox jumps over the lazy dog. Ünïcödé too: 日本語"


@pytest.fixture(scope="module")
def url():
    with live_server(make_pool(max_batch=8)) as url:
        wait_ready(url)
        yield url


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture(scope="module")
def bot() -> nc.Chatbot:
    return nc.load(SOURCE, device="cpu")


def model_logprobs(bot: nc.Chatbot, ids: list[int]) -> torch.Tensor:
    """[T, V]: row t is the model's log-distribution of the token after ids[:t + 1]."""
    with torch.inference_mode():
        return torch.log_softmax(bot.model(torch.tensor([ids]))[0].float(), dim=-1)


def complete(client, **body) -> dict:
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def token_text(bot, token: int) -> str:
    data = bot.tokenizer.decode_bytes([token])
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


def assert_legacy_logprobs(bot, logprobs: dict, ids: list[int], lp: torch.Tensor, first: int, top: int) -> None:
    """Entry i is token ids[first + i]: its logprob given what precedes it (None for the very first token), and
    the `top` best tokens there plus the chosen one."""
    assert logprobs["tokens"] == [token_text(bot, t) for t in ids[first:]]
    for i, token in enumerate(ids[first:]):
        position = first + i
        got, alternatives = logprobs["token_logprobs"][i], logprobs["top_logprobs"][i]
        if position == 0:
            assert got is None and alternatives is None
            continue
        assert abs(got - float(lp[position - 1, token])) < TOLERANCE
        best = lp[position - 1].topk(top)
        expected = {token_text(bot, t): float(v) for t, v in zip(best.indices.tolist(), best.values, strict=True)}
        expected.setdefault(token_text(bot, token), float(lp[position - 1, token]))
        assert alternatives.keys() == expected.keys()
        assert all(abs(alternatives[k] - v) < TOLERANCE for k, v in expected.items())


def assert_offsets(text: str, logprobs: dict) -> None:
    """Each whole-UTF-8 token's text is found at its offset in the choice's text."""
    offsets, tokens = logprobs["text_offset"], logprobs["tokens"]
    assert offsets == sorted(offsets) and offsets[-1] <= len(text)
    for token, offset in zip(tokens, offsets, strict=True):
        if not token.startswith("bytes:"):
            assert text[offset : offset + len(token)] == token


# --- log-likelihoods: what lm-evaluation-harness asks for --------------------------------------------------------
def test_echo_scores_a_token_prompt_as_the_model_does(client, bot):
    ids = bot.tokenizer.encode(TEXT)
    out = complete(client, prompt=ids, max_tokens=0, echo=True, logprobs=3)
    (choice,) = out["choices"]
    assert choice["text"] == bot.tokenizer.decode(ids) and choice["finish_reason"] == "length"
    assert_legacy_logprobs(bot, choice["logprobs"], ids, model_logprobs(bot, ids), first=0, top=3)
    assert_offsets(choice["text"], choice["logprobs"])
    assert out["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")


def test_a_text_prompt_is_read_after_bos_which_is_not_echoed(client, bot):
    ids = [bot.tokenizer.bos_token_id, *bot.tokenizer.encode(TEXT)]
    out = complete(client, prompt=TEXT, max_tokens=0, echo=True, logprobs=0)
    (choice,) = out["choices"]
    assert choice["text"] == TEXT
    assert choice["logprobs"]["token_logprobs"][0] is not None  # the first text token has <|bos|> before it
    assert_legacy_logprobs(bot, choice["logprobs"], ids, model_logprobs(bot, ids), first=1, top=0)
    assert_offsets(TEXT, choice["logprobs"])
    assert out["usage"]["prompt_tokens"] == len(ids)
    tokenized = client.post("/tokenize", json={"prompt": TEXT}).json()
    assert tokenized["tokens"] == ids and tokenized["count"] == len(ids) and tokenized["max_model_len"] == 256


def test_the_completion_is_the_librarys_greedy_reply_and_its_logprobs_the_models(client, bot):
    prompt = bot.tokenizer.encode("Once upon a time")
    reply = bot.generate(prompt, max_tokens=24, temperature=0, use_tools=False)
    out = complete(client, prompt=prompt, max_tokens=24, temperature=0, logprobs=2)
    (choice,) = out["choices"]
    assert choice["text"] == bot.tokenizer.decode(reply)
    lp = model_logprobs(bot, prompt + reply)
    assert_legacy_logprobs(bot, choice["logprobs"], prompt + reply, lp, first=len(prompt), top=2)
    assert choice["logprobs"]["text_offset"][0] == 0
    echoed = complete(client, prompt=prompt, max_tokens=24, temperature=0, logprobs=2, echo=True)["choices"][0]
    assert echoed["text"] == bot.tokenizer.decode(prompt) + choice["text"]
    assert_legacy_logprobs(bot, echoed["logprobs"], prompt + reply, lp, first=0, top=2)
    assert_offsets(echoed["text"], echoed["logprobs"])


def test_the_prompt_may_fill_the_context_when_only_scored(client, bot):
    ids = (bot.tokenizer.encode(TEXT) * 20)[:256]
    out = complete(client, prompt=ids, max_tokens=0, echo=True, logprobs=1)
    got = out["choices"][0]["logprobs"]["token_logprobs"]
    lp = model_logprobs(bot, ids)
    assert max(abs(got[t] - float(lp[t - 1, ids[t]])) for t in range(1, 256)) < TOLERANCE
    error = assert_error(client.post("/v1/completions", json={"prompt": ids, "max_tokens": 1}), 400)
    assert error["param"] == "prompt" and "256 tokens" in error["message"]
    assert complete(client, prompt=ids[:255], max_tokens=5, temperature=0)["choices"][0]["finish_reason"] == "length"


# --- sampling -----------------------------------------------------------------------------------------------------
CONTROLS = dict(temperature=0.9, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.3, presence_penalty=0.4,
                frequency_penalty=0.2)  # fmt: skip


def test_seeded_completions_with_every_control_are_the_librarys(client, bot):
    prompt = bot.tokenizer.encode("It was a dark and stormy night")
    out = complete(client, prompt=prompt, max_tokens=30, seed=7, n=2, logprobs=1, **CONTROLS)
    for i, choice in enumerate(out["choices"]):
        expected = bot.generate(prompt, max_tokens=30, seed=7 + i, use_tools=False, **CONTROLS)
        assert choice["index"] == i and choice["text"] == bot.tokenizer.decode(expected)
        # logprobs are the model's raw distribution, not the one temperature, top-k and the penalties made
        lp = model_logprobs(bot, prompt + expected)
        assert_legacy_logprobs(bot, choice["logprobs"], prompt + expected, lp, first=len(prompt), top=1)


@pytest.mark.parametrize("route", ["/chat/completions", "/v1/chat/completions"])
def test_both_chat_apis_take_every_control(client, bot, route, url):
    expected = bot.chat(HI, max_tokens=30, seed=3, **CONTROLS)
    if route == "/chat/completions":
        status, events = stream(url, route, {"messages": HI, "max_tokens": 30, "seed": 3, **CONTROLS})
        assert status == 200 and "".join(e.get("token", "") for e in events) == expected
    else:
        body = {"messages": HI, "max_tokens": 30, "seed": 3, **CONTROLS}
        assert client.post(route, json=body).json()["choices"][0]["message"]["content"] == expected


def test_a_list_of_prompts_gives_n_choices_each_in_order(client, bot):
    def greedy(ids: list[int]) -> str:
        return bot.tokenizer.decode(bot.generate(ids, max_tokens=8, temperature=0, use_tools=False))

    bos, encode = bot.tokenizer.bos_token_id, bot.tokenizer.encode
    out = complete(client, prompt=["Hello", "Bye"], n=2, max_tokens=8, temperature=0)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    hello, bye = greedy([bos, *encode("Hello")]), greedy([bos, *encode("Bye")])
    assert [c["text"] for c in out["choices"]] == [hello, hello, bye, bye]
    assert out["usage"]["prompt_tokens"] == len(encode("Hello")) + len(encode("Bye")) + 2
    out = complete(client, prompt=[[5, 6, 7], [8]], max_tokens=8, temperature=0)
    assert [c["text"] for c in out["choices"]] == [greedy([5, 6, 7]), greedy([8])]


def test_stop_strings_cut_the_completion_and_streaming_gives_the_same(client, bot, url):
    prompt = bot.tokenizer.encode("Once upon a time")
    full = complete(client, prompt=prompt, max_tokens=40, temperature=0)["choices"][0]["text"]
    stop = full[10:13]
    body = dict(prompt=prompt, max_tokens=40, temperature=0, stop=[stop], echo=True, logprobs=2)
    whole = complete(client, **body)
    (choice,) = whole["choices"]
    assert choice["text"] == bot.tokenizer.decode(prompt) + full[: full.index(stop)]
    assert choice["finish_reason"] == "stop"
    status, events = stream(url, "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert status == 200 and events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    merged = {key: [] for key in choice["logprobs"]}
    for c in chunks:
        for key, values in (c["choices"][0]["logprobs"] or {}).items():
            merged[key] += values
    assert merged == choice["logprobs"]


def test_a_batch_of_rows_with_different_controls_leaves_each_row_its_own(url, bot):
    """A greedy reply decoded beside rows with the most extreme controls is the library's greedy reply."""
    prompt = bot.tokenizer.encode("Once upon a time")
    greedy = bot.tokenizer.decode(bot.generate(prompt, max_tokens=200, temperature=0, use_tools=False))
    hostile = [dict(repetition_penalty=1e-300, presence_penalty=-2, frequency_penalty=2, min_p=1, temperature=2),
               dict(repetition_penalty=2, presence_penalty=2, frequency_penalty=-2, min_p=5e-324, top_p=5e-324),
               dict(repetition_penalty=0.5, temperature=1e-39, min_p=0.5, top_k=1)]  # fmt: skip
    bodies = [dict(prompt=prompt, max_tokens=200, temperature=0, logprobs=1)] + [
        dict(prompt=prompt, max_tokens=200, seed=1, logprobs=5, **h) for h in hostile
    ]
    results: list = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def one(i: int) -> None:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
            barrier.wait()
            try:
                results[i] = c.post("/v1/completions", json=bodies[i])
            except httpx.HTTPError as e:  # kept, so the assertion below says what went wrong
                results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    most_active = 0
    with httpx.Client(base_url=url, timeout=TIMEOUT) as poller:
        while any(t.is_alive() for t in threads):
            most_active = max(most_active, poller.get("/stats").json()["workers"][0]["active_requests"])
    for t in threads:
        t.join()
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results), [
        r.text if isinstance(r, httpx.Response) else repr(r) for r in results
    ]
    assert results[0].json()["choices"][0]["text"] == greedy
    assert most_active >= 2, "the rows were never decoded together"


# --- chat logprobs --------------------------------------------------------------------------------------------------
def test_chat_logprobs_are_the_models_streaming_or_not(client, bot, url):
    prompt = bot.prompt_for(HI, reserve=20)
    reply = bot.generate(prompt, max_tokens=20, temperature=0)
    body = {"messages": HI, "max_tokens": 20, "temperature": 0, "logprobs": True, "top_logprobs": 3}
    content = client.post("/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]["content"]
    lp = model_logprobs(bot, prompt + reply)
    assert [bytes(item["bytes"]) for item in content] == [bot.tokenizer.decode_bytes([t]) for t in reply]
    for i, (item, token) in enumerate(zip(content, reply, strict=True)):
        row = lp[len(prompt) + i - 1]
        assert item["token"] == token_text(bot, token) and abs(item["logprob"] - float(row[token])) < TOLERANCE
        best = row.topk(3)
        assert [bytes(t["bytes"]) for t in item["top_logprobs"]] == [bot.tokenizer.decode_bytes([t])
                                                                    for t in best.indices.tolist()]  # fmt: skip
        assert all(
            abs(t["logprob"] - float(v)) < TOLERANCE for t, v in zip(item["top_logprobs"], best.values, strict=True)
        )
    status, events = stream(url, "/v1/chat/completions", {**body, "stream": True})
    streamed = [item for e in events[:-1] if (lp_ := e["choices"][0]["logprobs"]) for item in lp_["content"]]
    assert status == 200 and streamed == content
    plain = client.post("/v1/chat/completions", json={**body, "logprobs": False, "top_logprobs": None}).json()
    assert plain["choices"][0]["logprobs"] is None


def test_the_openai_client_reads_both_kinds_of_logprobs(url):
    client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    completion = client.completions.create(model="nanochat", prompt="Hello", max_tokens=4, logprobs=2, echo=True)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset) > 4
    chat = client.chat.completions.create(model="nanochat", messages=HI, max_tokens=4, logprobs=True, top_logprobs=2)
    assert all(len(item.top_logprobs) == 2 for item in chat.choices[0].logprobs.content)


# --- tokenizer routes ---------------------------------------------------------------------------------------------
def test_tokenize_detokenize_and_tokenizer_info(client, bot):
    ids = client.post("/tokenize", json={"prompt": "<|bos|>Hi <|user_start|>x", "add_special_tokens": False}).json()
    sp = bot.tokenizer.special
    assert ids["tokens"] == [
        sp("<|bos|>"),
        *bot.tokenizer.encode("Hi "),
        sp("<|user_start|>"),
        *bot.tokenizer.encode("x"),
    ]
    assert client.post("/detokenize", json={"tokens": ids["tokens"]}).json() == {"prompt": "<|bos|>Hi <|user_start|>x"}
    info = client.get("/tokenizer_info").json()
    assert info["bos_token"] == info["eos_token"] == "<|bos|>" and info["vocab_size"] == 1024
    assert_error(client.post("/detokenize", json={"tokens": [1024]}), 400)


# --- validation ---------------------------------------------------------------------------------------------------
BAD_COMPLETIONS = {
    "no prompt": ({}, "prompt"),
    "prompt a number": ({"prompt": 5}, "prompt"),
    "prompt ids as floats": ({"prompt": [1.0, 2.0]}, "prompt"),
    "prompt ids as booleans": ({"prompt": [True]}, "prompt"),
    "empty list": ({"prompt": []}, "prompt"),
    "text and ids in one list": ({"prompt": ["a", [1]]}, "prompt"),
    "an empty id list": ({"prompt": [[1], []]}, "prompt"),
    "negative id": ({"prompt": [-1]}, "prompt"),
    "id out of vocabulary": ({"prompt": [[1], [1024]]}, "prompt.1"),
    "too many prompts": ({"prompt": ["a"] * 33}, "prompt"),
    "prompts times n": ({"prompt": ["a"] * 5, "n": 7}, "n"),
    "max_tokens 0 without echo": ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
    "max_tokens -1": ({"prompt": "a", "max_tokens": -1, "echo": True}, "max_tokens"),
    "logprobs 6": ({"prompt": "a", "logprobs": 6}, "logprobs"),
    "logprobs true": ({"prompt": "a", "logprobs": True}, "logprobs"),
    "echo 'yes'": ({"prompt": "a", "echo": "yes"}, "echo"),
    "a long text": ({"prompt": "x" * 32001}, "prompt"),
    "a lone surrogate": ({"prompt": "a\ud800"}, "prompt"),
    "repetition_penalty 0": ({"prompt": "a", "repetition_penalty": 0}, "repetition_penalty"),
    "repetition_penalty 2.5": ({"prompt": "a", "repetition_penalty": 2.5}, "repetition_penalty"),
    "presence_penalty -2.1": ({"prompt": "a", "presence_penalty": -2.1}, "presence_penalty"),
    "frequency_penalty '1'": ({"prompt": "a", "frequency_penalty": "1"}, "frequency_penalty"),
    "min_p 1.5": ({"prompt": "a", "min_p": 1.5}, "min_p"),
}
BAD_CHAT = {
    "top_logprobs without logprobs": ({"top_logprobs": 2}, None),
    "top_logprobs 21": ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    "logprobs 1": ({"logprobs": 1}, "logprobs"),
    "min_p -0.1": ({"min_p": -0.1}, "min_p"),
    "repetition_penalty true": ({"repetition_penalty": True}, "repetition_penalty"),
}


@pytest.mark.parametrize("body,param", BAD_COMPLETIONS.values(), ids=BAD_COMPLETIONS.keys())
def test_a_bad_completion_request_is_a_400_naming_its_parameter(client, body, param):
    # json.dumps writes a lone surrogate as its \u escape, as a client in another language might send it
    r = client.post("/v1/completions", content=json.dumps(body), headers={"content-type": "application/json"})
    error = assert_error(r, 400)
    assert error["param"] is not None and error["param"].startswith(param), error


@pytest.mark.parametrize("body,param", BAD_CHAT.values(), ids=BAD_CHAT.keys())
def test_a_bad_chat_control_is_a_400(client, body, param):
    error = assert_error(client.post("/v1/chat/completions", json={"messages": HI, **body}), 400)
    assert param is None or error["param"] == param, error


def test_the_api_key_guards_completions_and_the_tokenizer_routes():
    with live_server(make_pool(), api_key="k") as url:
        wait_ready(url)
        calls = [("POST", "/v1/completions", {"prompt": "a", "max_tokens": 1}), ("POST", "/tokenize", {"prompt": "a"}),
                 ("POST", "/detokenize", {"tokens": [1]}), ("GET", "/tokenizer_info", None)]  # fmt: skip
        with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
            for method, route, body in calls:
                assert_error(c.request(method, route, json=body), 401)
                assert c.request(method, route, json=body, headers={"Authorization": "Bearer k"}).status_code == 200
