"""The training pipeline, end to end on tiny models: tokenizer -> base -> sft -> rl -> load -> chat -> eval."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken
import torch

from conftest import PARITY
from nanochat_py import load, load_tokenizer
from nanochat_py.checkpoint import read_tensors
from nanochat_py.cli import main
from nanochat_py.train import tasks
from nanochat_py.train.data import conversation_rows, read_conversations, text_rows
from nanochat_py.train.precision import native_bf16
from nanochat_py.train.precision import resolve as resolve_precision
from nanochat_py.train.tokenizer_training import save_tokenizer, token_bytes, train_tokenizer

ROOT = Path(__file__).resolve().parent.parent
WORDS = sorted({w for w in (ROOT / "README.md").read_text().lower().split() if w.isalpha() and 3 <= len(w) <= 12})


def _corpus(tmp: Path) -> Path:
    """Some English text: the project's own docs and the generated conversations' wording."""
    text = tmp / "text"
    text.mkdir()
    docs = [ROOT / "README.md", *sorted((ROOT / "tests").glob("**/README.md")), *sorted((ROOT / "src").glob("**/*.py"))]
    for i, path in enumerate(docs):
        (text / f"doc{i}.txt").write_text(path.read_text())
    convs = tasks.conversations(300, WORDS, seed=5)
    lines = [json.dumps({"text": " ".join(str(m["content"]) for m in c["messages"])}) for c in convs]
    (text / "chat.jsonl").write_text("\n".join(lines) + "\n")
    return text


# A warmup and gentler learning rates keep these tiny models out of the chaotic regime of the defaults, where
# any rounding difference (bf16, another thread count) sends two runs to losses 4-13% apart, and one run of
# the whole suite saw the base loss climb from 6.2 to 12.3
STABLE = ["--warmup", "10", "--matrix-lr", "0.01", "--embedding-lr", "0.1", "--scalar-lr", "0.1"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    """Run the real CLI stages once with tiny settings; the tests below inspect what they wrote."""
    tmp = tmp_path_factory.mktemp("pipeline")
    text = _corpus(tmp)
    words = tmp / "words.txt"
    words.write_text("\n".join(WORDS) + "\n")
    out = {"text": text, "words": words, "tok": tmp / "tok", "chat": tmp / "chat", "base": tmp / "base",
           "sft": tmp / "sft", "rl": tmp / "rl"}  # fmt: skip
    cli = ["--device", "cpu"]
    assert main(["train", "tokenizer", "--input", str(text), "--vocab-size", "512", "--out", str(out["tok"])]) == 0
    assert main(["train", "data", "--out", str(out["chat"]), "--words", str(words), "--conversations", "400",
                 "--heldout", "5"]) == 0  # fmt: skip
    assert main(["train", "base", "--depth", "2", "--seq-len", "64", "--data", str(text), "--tokenizer",
                 str(out["tok"]), "--steps", "40", "--batch-size", "8", "--out", str(out["base"]),
                 "--val-percent", "20", "--eval-every", "10", "--eval-rows", "8", *STABLE, *cli]) == 0  # fmt: skip
    assert main(["train", "sft", "--source", str(out["base"]), "--data", str(out["chat"] / "conversations.jsonl"),
                 "--steps", "30", "--batch-size", "8", "--seq-len", "96", "--matrix-lr", "0.02",
                 "--embedding-lr", "0.3", "--out", str(out["sft"]), *cli]) == 0  # fmt: skip
    assert main(["train", "rl", "--source", str(out["sft"]), "--task", "mixed", "--words", str(words),
                 "--steps", "2", "--batch-size", "2", "--samples", "4", "--max-tokens", "16",
                 "--out", str(out["rl"]), *cli]) == 0  # fmt: skip
    return out


def _meta(directory: Path) -> dict:
    return json.loads(sorted(directory.glob("meta_*.json"))[-1].read_text())


def test_tokenizer_is_nanochat_compatible(pipeline):
    tok = load_tokenizer(pipeline["tok"] / "tokenizer.pkl")
    assert tok.vocab_size == 512
    assert tok.special("<|python_start|>") == 512 - 9 + 5  # nanochat's special tokens follow the merges, in order
    text = "Hello world, 12345 strawberry!"
    assert tok.decode(tok.encode(text)) == text
    # the reference reads tokenizer.pkl with a plain pickle.load: it must be a real tiktoken Encoding
    with open(pipeline["tok"] / "tokenizer.pkl", "rb") as f:
        encoding = pickle.load(f)
    assert isinstance(encoding, tiktoken.Encoding)
    assert encoding.encode_ordinary(text) == tok.encode(text)
    lengths = torch.load(pipeline["tok"] / "token_bytes.pt", weights_only=True)
    ids = tok.encode(text)
    assert int(lengths[ids].sum()) == len(text.encode())
    assert int(lengths[tok.bos_token_id]) == 0


def test_tokenizer_rejects_a_vocab_smaller_than_the_bytes():
    with pytest.raises(ValueError, match="at least 265"):
        train_tokenizer(["abc"], 100)


def test_base_loss_falls_and_bpb_is_recorded(pipeline):
    meta = _meta(pipeline["base"])
    losses = [h["loss"] for h in meta["history"] if "loss" in h]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    bpbs = [h["val_bpb"] for h in meta["history"] if "val_bpb" in h]
    assert len(bpbs) == 4 and bpbs[-1] < bpbs[0] - 0.5  # 1.0 to 1.6 on each of six seeds, on 1 or 2 threads
    config = meta["model_config"]
    assert (config["generation"], config["n_layer"], config["n_embd"], config["n_head"]) == ("G5", 2, 128, 1)
    assert (pipeline["base"] / "model_000040.pt").is_file() and (pipeline["base"] / "optim_000040.pt").is_file()


def test_sft_and_rl_checkpoints_load_and_chat(pipeline):
    sft = _meta(pipeline["sft"])
    losses = [h["loss"] for h in sft["history"] if "loss" in h]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert [s["stage"] for s in sft["lineage"]] == ["base"]
    rl = _meta(pipeline["rl"])
    assert [s["stage"] for s in rl["lineage"]] == ["base", "sft"]
    assert all(0.0 <= h["reward"] <= 1.0 for h in rl["history"])
    bot = load(pipeline["rl"], device="cpu")
    assert bot.config.generation == "G5"
    reply = bot.chat([{"role": "user", "content": "What is 12 + 34?"}], max_tokens=20, temperature=0.0)
    assert isinstance(reply, str)


def test_rl_rewards_only_replies_the_heldout_judge_passes(pipeline, monkeypatch):
    """A reply that says the right number but never stops (the built-in model's runaways) earns nothing."""
    from nanochat_py.train import rl

    bot = load(pipeline["rl"], device="cpu")
    tok, end = bot.tokenizer, bot.tokenizer.special("<|assistant_end|>")

    def tool_reply(call: str, output: str, text: str) -> list[int]:
        s = tok.special
        return [s("<|python_start|>"), *tok.encode(call), s("<|python_end|>"),
                s("<|output_start|>"), *tok.encode(output), s("<|output_end|>"), *tok.encode(text)]  # fmt: skip

    right = tool_reply("12+34", "46", "12 + 34 = 46.")
    samples = {  # reply tokens, whether it ended by itself
        "right": ([*right, end], True),
        "runaway": ([*right, *tok.encode(" 46. 46. 46. 46. 46.")], False),
        "wrong call": ([*tool_reply("12*34", "408", "46"), end], True),
    }
    problem = tasks.Problem("arithmetic", "What is 12 + 34?", "46", "12+34")
    for name, (tokens, ended) in samples.items():
        reply = rl.read_reply(tok, tokens, ended)
        assert tasks.is_correct(problem, reply.text), f"{name}: the last number is right every time"
        monkeypatch.setattr(
            rl, "_rollouts", lambda *a, t=tokens, e=ended: [(t, [True] * len(t), rl.read_reply(tok, t, e))]
        )
        reward, _ = rl._step_loss(bot, [problem], None, seed=0)
        assert reward == (1.0 if name == "right" else 0.0), name


def test_eval_writes_a_report_and_a_plot(pipeline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, png = tmp_path / "report" / "eval.json", tmp_path / "report" / "eval.png"
    code = main(["eval", "--source", str(pipeline["rl"]), "--heldout", str(pipeline["chat"] / "heldout"),
                 "--task", "arithmetic,letters,identity", "--out", str(out), "--plot", str(png),
                 "--device", "cpu"])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    for task in ("arithmetic", "letters", "identity"):
        assert report["results"][task]["n"] == 5
        assert 0.0 <= report["results"][task]["accuracy"] <= 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png.unlink()
    code = main(["eval", "--source", str(pipeline["base"]), "--task", "bpb", "--text", str(pipeline["text"]),
                 "--seq-len", "64", "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert 0.5 < json.loads(out.read_text())["results"]["bpb"]["bpb"] < 8.0
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == []  # a .json --out without --plot: no PNG anywhere


def test_resume_continues_with_the_same_losses(pipeline, tmp_path):
    args = ["train", "base", "--depth", "2", "--seq-len", "32", "--data", str(pipeline["text"]), "--tokenizer",
            str(pipeline["tok"]), "--batch-size", "4", "--device", "cpu"]  # fmt: skip
    assert main([*args, "--steps", "6", "--out", str(tmp_path / "straight")]) == 0
    # the interrupted run has the same schedule (6 steps); it saves at step 3 and is "stopped" there
    split = tmp_path / "split"
    assert main([*args, "--steps", "6", "--save-every", "3", "--out", str(split)]) == 0
    for leftover in split.glob("*_000006.*"):  # as if it had been stopped after step 3
        leftover.unlink()
    assert main([*args, "--steps", "6", "--out", str(split), "--resume"]) == 0
    straight, resumed = _meta(tmp_path / "straight")["history"], _meta(split)["history"]
    assert [h["step"] for h in resumed] == [h["step"] for h in straight]
    assert [h.get("loss") for h in resumed] == pytest.approx([h.get("loss") for h in straight], abs=1e-5)
    a = torch.load(tmp_path / "straight" / "model_000006.pt", weights_only=True)
    b = torch.load(split / "model_000006.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_average_holds_the_mean_of_the_warmdown_weights_and_resumes(pipeline, tmp_path):
    args = ["train", "base", "--depth", "2", "--seq-len", "32", "--data", str(pipeline["text"]), "--tokenizer",
            str(pipeline["tok"]), "--batch-size", "4", "--device", "cpu", "--steps", "6", "--warmdown-ratio",
            "0.5"]  # fmt: skip
    assert main([*args, "--save-every", "1", "--out", str(tmp_path / "raw")]) == 0
    assert main([*args, "--average", "--out", str(tmp_path / "averaged")]) == 0
    raw = [torch.load(tmp_path / "raw" / f"model_{s:06d}.pt", weights_only=True) for s in (4, 5, 6)]
    averaged = torch.load(tmp_path / "averaged" / "model_000006.pt", weights_only=True)
    assert _meta(tmp_path / "averaged")["averaged_steps"] == 3  # the warmdown: steps 4, 5 and 6
    for k, v in averaged.items():
        assert torch.allclose(v, sum(r[k] for r in raw) / 3, atol=1e-6), k
    assert any(not torch.allclose(averaged[k], raw[-1][k], atol=1e-4) for k in averaged), "the last step's weights"
    # stopped at step 5 (mid-warmdown) and resumed: the same run, and the same mean
    split = tmp_path / "split"
    assert main([*args, "--average", "--save-every", "5", "--out", str(split)]) == 0
    for leftover in split.glob("*_000006.*"):
        leftover.unlink()
    assert main([*args, "--average", "--out", str(split), "--resume"]) == 0
    resumed = torch.load(split / "model_000006.pt", weights_only=True)
    assert all(torch.allclose(resumed[k], averaged[k], atol=1e-6) for k in averaged)
    losses = [h.get("loss") for h in _meta(split)["history"]]
    assert losses == pytest.approx([h.get("loss") for h in _meta(tmp_path / "averaged")["history"]], abs=1e-5)


def test_resume_without_a_checkpoint_says_so(pipeline, tmp_path, capsys):
    code = main(["train", "base", "--depth", "1", "--data", str(pipeline["text"]), "--tokenizer",
                 str(pipeline["tok"]), "--seq-len", "32", "--steps", "2", "--out", str(tmp_path),
                 "--resume"])  # fmt: skip
    assert code == 2
    assert "no optim_<step>.pt checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("fixture", sorted(p.name for p in PARITY.iterdir() if (p / "model").is_dir()))
def test_sft_of_every_generation_reloads_exactly(fixture, tmp_path):
    """Fine-tune each published generation's fixture; the saved copy loads back with the same logits."""
    from nanochat_py.train.distributed import Processes
    from nanochat_py.train.trainer import TrainSettings, train

    bot = load(PARITY / fixture / "model", device="cpu", dtype="fp32")
    tok, model = bot.tokenizer, bot.model
    convs = tasks.conversations(12, WORDS, seed=1)
    rows = conversation_rows(tok, convs, seq_len=min(48, model.config.sequence_len))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainSettings(out_dir=tmp_path, steps=2, batch_size=2, stage="sft")
    path = train(model, tok, rows, None, settings, Processes())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "training changed nothing"
    reloaded = load(tmp_path, device="cpu", dtype="fp32")
    assert reloaded.config == model.config
    ids = torch.tensor([tok.render_for_completion(convs[0]["messages"][:1])])
    assert torch.equal(reloaded.model(ids), model(ids))
    assert path.name == "model_000002.pt"


def test_conversation_packing_keeps_conversations_whole_and_trains_only_the_assistant(pipeline):
    tok = load_tokenizer(pipeline["tok"])
    convs = read_conversations([pipeline["chat"] / "conversations.jsonl"])[:60]
    rows = conversation_rows(tok, convs, seq_len=255)
    assert rows.rows.shape[1] == 256
    rendered = [tok.render_conversation(c, max_tokens=256) for c in convs]  # longer ones are cut to a row
    needed = sum(len(ids) for ids, _ in rendered) / 256
    assert len(rows) <= needed * 1.15 + 1  # best-fit leaves little padding: several conversations share a row
    assert int(rows.mask.sum()) == sum(sum(m) for _, m in rendered)  # every assistant token, exactly once
    flat = [r.tolist() for r in rows.rows]
    for ids, _ in rendered[:10]:  # each conversation sits whole, inside one row
        assert any(_contains(row, ids) for row in flat)
    inputs, targets = rows.batch(0, 4)
    assert inputs.shape == targets.shape == (4, 255)
    user_end = tok.special("<|user_end|>")
    assert not (targets == user_end).any()  # user tokens are never targets


def _contains(row: list[int], ids: list[int]) -> bool:
    return any(row[i : i + len(ids)] == ids for i in range(len(row) - len(ids) + 1))


def test_text_rows_start_documents_with_bos(pipeline):
    tok = load_tokenizer(pipeline["tok"])
    rows = text_rows(tok, ["first document", "second one"], seq_len=4)
    stream = rows.rows[:, :-1].flatten().tolist() + rows.rows[-1:, -1].tolist()
    assert stream[0] == tok.bos_token_id and stream.count(tok.bos_token_id) == 2


def test_held_out_problems_never_appear_in_training_data():
    words = [f"{a}{b}{c}" for a in "abcdefg" for b in "aeiou" for c in "nrstlm"]
    held = tasks.problems("arithmetic", 300, seed=9) + tasks.problems("letters", 300, words, seed=9)
    held_questions = {p.question for p in held}
    held_words = {w for w in words if tasks.held_out(w)}
    seen_calls, seen_words = set(), set()
    for conv in tasks.conversations(3000, words, seed=11):
        for m in conv["messages"]:
            assert not isinstance(m["content"], str) or m["content"] not in held_questions
            for part in m["content"] if isinstance(m["content"], list) else []:
                if part["type"] == "python" and ".count" in part["text"]:
                    seen_words.add(part["text"].split("'")[1].strip())
                elif part["type"] == "python":
                    seen_calls.add(part["text"])
    assert seen_words and not seen_words & held_words
    held_calls = {c for p in held if p.task == "arithmetic" for c in [_call_of(p.question)] if c}
    assert held_calls and not seen_calls & held_calls


def _call_of(question: str) -> str | None:
    import re

    for op in "+-*":
        m = re.search(rf"(\d+) ?\{op} ?(\d+)", question)
        if m:
            return f"{m.group(1)}{op}{m.group(2)}"
    return None


def test_answer_checking():
    p = tasks.Problem("arithmetic", "What is 3 - 15?", "-12")
    assert tasks.is_correct(p, "3 - 15 = -12.")
    assert not tasks.is_correct(p, "-12 is wrong, it is 12")
    assert tasks.is_correct(tasks.Problem("identity", "Who are you?", "nanochat-py"), "I'm NanoChat-py!")
    once = tasks.Problem("letters", "How many o's in constituent?", "1")
    assert tasks.is_correct(once, "The letter o appears once in constituent.")  # the training data's own words
    assert tasks.is_correct(tasks.Problem("letters", "r's in error?", "2"), "Twice.")
    assert not tasks.is_correct(once, "It appears once here, 2 times in all.")
    assert not tasks.is_correct(once, "Nonce words: 3")


def test_token_bytes_counts_utf8_bytes(pipeline):
    tok = load_tokenizer(pipeline["tok"])
    lengths = token_bytes(tok)
    assert lengths.shape == (tok.vocab_size,)
    assert sum(int(lengths[i]) for i in tok.encode("héllo")) == len("héllo".encode())


def test_two_processes_match_one_process_with_accumulation(pipeline, tmp_path):
    """torchrun with 2 CPU processes (gloo) = 1 process accumulating the same 2 micro-batches."""
    args = ["train", "base", "--depth", "1", "--seq-len", "32", "--data", str(pipeline["text"]), "--tokenizer",
            str(pipeline["tok"]), "--batch-size", "2", "--steps", "3", "--device", "cpu", *STABLE]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "nanochat_py.cli", *args,
           "--out", str(tmp_path / "ddp")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*args, "--accum", "2", "--out", str(tmp_path / "one")]) == 0
    # and with accumulation on top: 2 processes x 2 micro-batches = 1 process x 4
    done = subprocess.run([*cmd[:-1], str(tmp_path / "ddp4"), "--accum", "2"], env=env, capture_output=True,
                          text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*args, "--accum", "4", "--out", str(tmp_path / "one4")]) == 0
    # the sums run in another order, and Adam turns a near-zero gradient's last-bit difference into a full
    # step on a scalar, so here the losses are compared (a wrong batch split would move them by far more)
    four, one4 = _meta(tmp_path / "ddp4")["history"], _meta(tmp_path / "one4")["history"]
    assert [h.get("loss") for h in four] == pytest.approx([h.get("loss") for h in one4], abs=1e-4)
    two = _meta(tmp_path / "one")["history"]  # a different batch split: visibly different losses
    assert [h.get("loss") for h in four] != pytest.approx([h.get("loss") for h in two], abs=1e-3)
    a = torch.load(tmp_path / "ddp" / "model_000003.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "model_000003.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    ddp, one = _meta(tmp_path / "ddp")["history"], _meta(tmp_path / "one")["history"]
    assert [h.get("loss") for h in ddp] == pytest.approx([h.get("loss") for h in one], abs=1e-5)


def test_save_tokenizer_round_trip(tmp_path):
    tok = train_tokenizer(["the cat sat on the mat " * 20], 300)
    path = save_tokenizer(tok, tmp_path)
    assert load_tokenizer(path).encode("the cat") == tok.encode("the cat")


def _losses(directory: Path) -> list[float]:
    return [h["loss"] for h in _meta(directory)["history"] if "loss" in h]


def test_bf16_training_follows_fp32(pipeline, tmp_path):
    args = ["train", "base", "--depth", "2", "--seq-len", "64", "--data", str(pipeline["text"]), "--tokenizer",
            str(pipeline["tok"]), "--batch-size", "8", "--steps", "30", "--device", "cpu",
            *STABLE]  # fmt: skip
    for precision in ("fp32", "bf16"):
        assert main([*args, "--precision", precision, "--out", str(tmp_path / precision)]) == 0
        assert _meta(tmp_path / precision)["train"]["precision"] == precision
    fp32, bf16 = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert fp32 != bf16, "bf16 autocast really ran"
    assert fp32[0] == pytest.approx(bf16[0], rel=0.01)  # the same model on the same first batch
    # the same data, init and schedule: the curves stay together (bf16 rounds the products, not the weights)
    assert sum(bf16[-5:]) / 5 == pytest.approx(sum(fp32[-5:]) / 5, rel=0.01)  # 0.05% on seeds 0-5
    assert sum(fp32[-5:]) / 5 < 0.8 * fp32[0], "both really trained"
    val_bpb = [_meta(tmp_path / p)["history"][-1]["val_bpb"] for p in ("fp32", "bf16")]
    assert val_bpb[1] == pytest.approx(val_bpb[0], rel=0.01)
    for name, tensor in read_tensors(next((tmp_path / "bf16").glob("model_*.pt"))).items():
        assert tensor.dtype == torch.float32, f"{name}: master weights stay fp32"


def test_compiled_training_matches_eager(pipeline, tmp_path):
    args = ["train", "base", "--depth", "1", "--seq-len", "32", "--data", str(pipeline["text"]), "--tokenizer",
            str(pipeline["tok"]), "--batch-size", "4", "--steps", "2", "--precision", "fp32",
            "--device", "cpu"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "eager")]) == 0
    assert main([*args, "--compile", "--out", str(tmp_path / "compiled")]) == 0
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    # the same forward pass, then the same update up to the order of float sums; training at these learning
    # rates amplifies such differences step by step (0.5% by step 3, as between any two summation orders)
    assert compiled[0] == pytest.approx(eager[0], rel=1e-5)
    assert compiled[1] == pytest.approx(eager[1], rel=1e-3)
    assert _meta(tmp_path / "compiled")["train"]["compile"] is True


def test_auto_precision_is_bf16_only_where_the_device_does_bf16_natively(capsys):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", cpu)
    rl = ["train", "rl", "--source", "x", "--task", "arithmetic", "--steps", "1", "--out", "y"]
    assert main([*rl, "--compile"]) == 2
    assert "--compile is for train base and sft" in capsys.readouterr().err
