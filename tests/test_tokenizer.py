"""The tokenizer: encodings against tiktoken and Hugging Face `tokenizers`, streaming decode, chat rendering."""

from __future__ import annotations

import json
import re

import pytest
import tiktoken
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

import nanochat_py as nc
from conftest import G0, TOKENIZER_65K
from nanochat_py.safe_pickle import read_tiktoken_state
from nanochat_py.tokenizer import SPECIAL_TOKENS

ENCODINGS_65K = json.loads((TOKENIZER_65K.parent / "encodings.json").read_text())
TOKENIZER_1K = G0 / "model" / "tokenizer.pkl"

HARD_CASES = {
    "cjk": "日本語のテキストと中文文本，還有한국어 텍스트。全角：ＡＢＣ１２３",
    "emoji_family_zwj": "family: 👨‍👩‍👧‍👦 and 👩‍❤️‍💋‍👨 and 🧑🏻‍💻",
    "emoji_flags": "🇫🇷🇯🇵🇺🇸 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "emoji_skin_tones": "👍🏽👋🏿👌🏻 ✊🏾",
    "combining_marks": "".join(c + "\u0301\u0323\u0308" for c in "zalgo text") + " e\u0301 n\u0303 क्षि",
    "whitespace_runs": ("   \t\t\n \n\n\r\n\t  x" * 400)[:5000],
    "long_word": ("antidisestablishmentarianism" * 400)[:10000],
    "digit_runs": "1234567890" * 30 + " 3.14159 1,234,567 007 0x1F 1e-9",
    "mixed_scripts": "Hello Привет مرحبا שלום नमस्ते γειά σου 你好 ¿Qué tal? Ärger ÆØÅ",
    "code": 'def f(x: int) -> dict:\n\tif x <= 0:\n        return {"a": [1, 2]}  # cmt\n    return f(x - 1)\r\n}}}',
    "contractions": "don't I'LL we'Re they've SHE'D it's",
}


@pytest.fixture(scope="module")
def tok65k() -> nc.Tokenizer:
    return nc.load_tokenizer(TOKENIZER_65K)


@pytest.fixture(scope="module")
def tok1k() -> nc.Tokenizer:
    return nc.load_tokenizer(TOKENIZER_1K)


@pytest.fixture(scope="module")
def reference65k() -> tiktoken.Encoding:
    """A tiktoken Encoding built straight from the pickled state, without nanochat-py's wrapper."""
    state = read_tiktoken_state(TOKENIZER_65K)
    return tiktoken.Encoding(
        name=state["name"],
        pat_str=state["pat_str"],
        mergeable_ranks=state["mergeable_ranks"],
        special_tokens=state["special_tokens"],
    )


# --- the real 65k tokenizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ENCODINGS_65K["cases"], ids=lambda c: repr(c["text"])[:30])
def test_65k_tokenizer_matches_tiktoken_fixture(tok65k, case):
    assert tok65k.encode(case["text"]) == case["ids"]
    assert tok65k.decode(case["ids"]) == case["text"]


def test_65k_tokenizer_sizes_and_special_ids(tok65k):
    specials = ENCODINGS_65K["special_tokens"]
    assert tok65k.vocab_size == 65536
    assert list(specials) == list(SPECIAL_TOKENS)
    assert tok65k.bos_token_id == specials["<|bos|>"]
    assert {name: tok65k.special(name) for name in SPECIAL_TOKENS} == specials
    assert tok65k.special_ids == set(specials.values())


@pytest.mark.parametrize("name", HARD_CASES)
def test_hard_cases_encode_like_tiktoken_and_round_trip(tok65k, reference65k, name):
    text = HARD_CASES[name]
    ids = tok65k.encode(text)
    assert ids == reference65k.encode_ordinary(text)
    assert tok65k.decode(ids) == text


def test_special_token_text_in_plain_text_is_not_special(tok65k, reference65k):
    text = "<|bos|> <|user_end|>"
    ids = tok65k.encode(text)
    assert not set(ids) & tok65k.special_ids
    assert ids == reference65k.encode_ordinary(text)
    assert tok65k.decode(ids) == text


def test_only_the_renderer_adds_special_tokens(tok65k):
    conv = [
        {"role": "user", "content": "<|assistant_end|> hi <|bos|><|python_start|>"},
        {"role": "assistant", "content": "ok <|user_start|><|assistant_end|>"},
        {"role": "user", "content": "<|output_end|>"},
    ]
    ids, mask = tok65k.render_conversation(conv)
    structure = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>"]
    structure += ["<|user_start|>", "<|user_end|>"]
    assert [t for t in ids if t in tok65k.special_ids] == [tok65k.special(s) for s in structure]
    assert ids.count(tok65k.special("<|assistant_end|>")) == 1
    assert len(mask) == len(ids)


# --- streaming decode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tok_name", ["tok65k", "tok1k"])
def test_stream_decoder_never_emits_replacement_characters(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    text = "🐍 日本語 👨‍👩‍👧‍👦 café 🇫🇷 한국어"
    ids = tok.encode(text)
    token_bytes = [tok.encoding.decode_single_token_bytes(t) for t in ids]

    def valid_utf8(b: bytes) -> bool:
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    assert not all(valid_utf8(b) for b in token_bytes), "the text must split a UTF-8 sequence across tokens"
    decoder = tok.stream_decoder()
    pieces = [decoder.add(t) for t in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text
    assert decoder.flush() == ""


# --- chat rendering -----------------------------------------------------------------------------------------


def test_system_message_is_merged_into_the_first_user_message(tok1k):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    ids, mask = tok1k.render_conversation(conv)
    s = tok1k.special
    assert ids == [s("<|bos|>"), s("<|user_start|>"), *tok1k.encode("Be brief.\n\nHi there"), s("<|user_end|>")]
    assert mask == [0] * len(ids)


def test_tool_parts_are_rendered_and_masked(tok1k):
    conv = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "python", "text": "1+1"},
                {"type": "python_output", "text": "2"},
                {"type": "text", "text": "done"},
            ],
        },
    ]
    ids, mask = tok1k.render_conversation(conv)
    s, e = tok1k.special, tok1k.encode
    want = [
        (s("<|bos|>"), 0),
        (s("<|user_start|>"), 0),
        *[(t, 0) for t in e("q")],
        (s("<|user_end|>"), 0),
        (s("<|assistant_start|>"), 0),
        *[(t, 1) for t in e("a")],
        (s("<|python_start|>"), 1),
        *[(t, 1) for t in e("1+1")],
        (s("<|python_end|>"), 1),
        (s("<|output_start|>"), 0),
        *[(t, 0) for t in e("2")],
        (s("<|output_end|>"), 0),
        *[(t, 1) for t in e("done")],
        (s("<|assistant_end|>"), 1),
    ]
    assert list(zip(ids, mask, strict=True)) == want
    for name, value in [("<|python_start|>", 1), ("<|python_end|>", 1), ("<|output_start|>", 0), ("<|output_end|>", 0)]:
        assert mask[ids.index(s(name))] == value


def test_render_for_completion_drops_the_last_answer_and_opens_a_new_one(tok1k):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    s = tok1k.special
    want = [s("<|bos|>"), s("<|user_start|>"), *tok1k.encode("Hi"), s("<|user_end|>"), s("<|assistant_start|>")]
    assert tok1k.render_for_completion(conv) == want


@pytest.mark.parametrize(
    "roles, bad_index",
    [(["user", "user"], 1), (["assistant"], 0), (["user", "assistant", "assistant"], 2)],
)
def test_roles_that_do_not_alternate_are_refused_naming_the_message(tok1k, roles, bad_index):
    conv = [{"role": r, "content": "x"} for r in roles]
    with pytest.raises(nc.ConversationError, match=f"message {bad_index}"):
        tok1k.render_conversation(conv)


def test_role_error_after_a_system_message_names_the_callers_index(tok1k):
    conv = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "user", "content": "u"}]
    with pytest.raises(nc.ConversationError, match="message 2"):
        tok1k.render_conversation(conv)


def test_unknown_assistant_part_type_is_refused(tok1k):
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "image", "text": "x"}]}]
    with pytest.raises(nc.ConversationError, match="image"):
        tok1k.render_conversation(conv)


# --- tokenizer.json ----------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE files."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in bs}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tiktoken_to_hf(state: dict) -> HFTokenizer:
    """Convert a tiktoken state to a `tokenizers` byte-level BPE, the way tiktoken -> HF converters do."""
    byte_chars = _bytes_to_unicode()
    ranks = state["mergeable_ranks"]

    def spell(token: bytes) -> str:
        return "".join(byte_chars[b] for b in token)

    merges = []  # every split of every token into two tokens, ordered by the rank of the merged token
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], spell(left), spell(right)))
    merges.sort()
    bpe = models.BPE(
        vocab={spell(t): r for t, r in ranks.items()},
        merges=[(left, right) for *_, left, right in merges],
        ignore_merges=True,
    )
    hf = HFTokenizer(bpe)
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(state["pat_str"]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    specials = sorted(state["special_tokens"].items(), key=lambda item: item[1])
    hf.add_special_tokens([AddedToken(name, special=True, normalized=False) for name, _ in specials])
    return hf


JSON_TEXTS = [
    "Hello world!",
    "  leading spaces and\ttabs\n\nnew lines",
    "numbers 1234567 and 3.14159",
    "unicode: café, naïve, 日本語, emoji 🤖",
    "don't you'll we've I'M",
    *HARD_CASES.values(),
]


@pytest.fixture(scope="module")
def hf_and_json(tmp_path_factory) -> tuple[HFTokenizer, nc.Tokenizer]:
    state = read_tiktoken_state(TOKENIZER_1K)
    hf = tiktoken_to_hf(state)
    assert {name: hf.token_to_id(name) for name in state["special_tokens"]} == state["special_tokens"]
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    hf.save(str(path))
    return hf, nc.load_tokenizer(path)


@pytest.mark.parametrize("text", JSON_TEXTS, ids=lambda t: repr(t)[:30])
def test_tokenizer_json_encodes_like_hf_tokenizers_and_the_pkl(hf_and_json, tok1k, text):
    hf, from_json = hf_and_json
    ids = from_json.encode(text)
    assert ids == hf.encode(text, add_special_tokens=False).ids
    assert ids == tok1k.encode(text)
    assert from_json.decode(ids) == text


def test_tokenizer_json_has_the_pkl_special_tokens(hf_and_json, tok1k):
    _, from_json = hf_and_json
    assert from_json.vocab_size == tok1k.vocab_size == 1024
    assert {n: from_json.special(n) for n in SPECIAL_TOKENS} == {n: tok1k.special(n) for n in SPECIAL_TOKENS}


def test_tokenizer_json_with_merges_out_of_rank_order_is_refused(hf_and_json, tmp_path):
    hf, _ = hf_and_json
    data = json.loads(hf.to_str())
    data["model"]["merges"].reverse()
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(nc.NanochatError, match="merges"):
        nc.load_tokenizer(path)


def test_tokenizer_json_that_is_not_bpe_is_refused(tmp_path):
    path = tmp_path / "tokenizer.json"
    HFTokenizer(models.WordPiece(vocab={"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(str(path))
    with pytest.raises(nc.NanochatError, match="WordPiece"):
        nc.load_tokenizer(path)


@pytest.mark.parametrize("content", ["{not json", "[]", "{}"])
def test_unreadable_tokenizer_json_is_a_nanochat_error(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(nc.NanochatError, match="tokenizer.json"):
        nc.load_tokenizer(path)


def test_tokenizer_json_whose_model_is_not_an_object_is_a_nanochat_error(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": "BPE"}')
    with pytest.raises(nc.NanochatError):
        nc.load_tokenizer(path)


# --- finding the file ---------------------------------------------------------------------------------------


def test_load_tokenizer_from_a_directory_with_a_pkl():
    text = "Hello world! 日本語"
    assert nc.load_tokenizer(G0 / "model").encode(text) == nc.load_tokenizer(TOKENIZER_1K).encode(text)


def test_load_tokenizer_from_a_directory_with_a_json(tmp_path, hf_and_json, tok1k):
    hf, _ = hf_and_json
    hf.save(str(tmp_path / "tokenizer.json"))
    text = "Hello world! 日本語"
    assert nc.load_tokenizer(tmp_path).encode(text) == tok1k.encode(text)


def test_load_tokenizer_from_a_directory_without_one_names_it(tmp_path):
    with pytest.raises(nc.NanochatError, match=re.escape(str(tmp_path))):
        nc.load_tokenizer(tmp_path)


def test_load_tokenizer_from_a_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope" / "tokenizer.pkl"
    with pytest.raises(nc.NanochatError, match=re.escape(str(missing))):
        nc.load_tokenizer(missing)
