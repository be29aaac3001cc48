"""The `nanochat-py chat` command as a user runs it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nanochat_py as nc
from conftest import G5
from nanochat_py.cli import main

SOURCE = str(G5 / "model")
SCRIPT = Path(sys.executable).parent / "nanochat-py"


COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "nanochat_py.cli"]


def run(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    return subprocess.run([*COMMAND, *args], input=stdin, capture_output=True, text=True, timeout=120, env=env)


def assert_one_error_line(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanochat-py: error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0]


def run_here(capfd, *args: str) -> subprocess.CompletedProcess:
    """main() in this process (no interpreter start-up): for the many flag checks argparse does alike."""
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture
def built_in(tmp_path) -> dict:
    """An environment whose $NANOCHAT_BASE_DIR has no checkpoints: the CLI uses the built-in model."""
    return {"NANOCHAT_BASE_DIR": str(tmp_path / "no-checkpoints")}


def test_one_prompt_prints_only_the_deterministic_answer():
    first = run("chat", "--source", SOURCE, "-p", "hi", "--temperature", "0", "--max-tokens", "30")
    assert first.returncode == 0, first.stderr
    again = run("chat", "--source", SOURCE, "-p", "hi", "--temperature", "0", "--max-tokens", "30")
    assert first.stdout == again.stdout
    bot = nc.load(SOURCE, device="cpu")
    assert first.stdout == bot.chat([{"role": "user", "content": "hi"}], max_tokens=30, temperature=0) + "\n"


def test_prompt_from_stdin_and_seeded_sampling():
    piped = run("chat", "-s", SOURCE, "-p", "-", "--seed", "3", "-m", "20", stdin="hi")
    direct = run("chat", "-s", SOURCE, "-p", "hi", "--seed", "3", "-m", "20")
    assert piped.returncode == 0 and piped.stdout == direct.stdout


def test_bad_source_is_one_clear_line_on_stderr():
    result = run("chat", "--source", "/no/such/dir", "-p", "hi")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "nanochat-py: error: source /no/such/dir does not exist. Pass a nanochat base dir, a checkpoint dir, "
        "a model file, a transformers-format dir, or hf:<owner>/<repo>"
    ]


def test_bad_sampling_flags_are_refused():
    result = run("chat", "--source", SOURCE, "-p", "hi", "--top-p", "1.5")
    assert_one_error_line(result, "--top-p", "must be a number in (0, 1]")


def test_interactive_chat_keeps_history_and_clears_it():
    result = run("chat", "-s", SOURCE, "-t", "0", "-m", "8", stdin="hello\nand again\n/clear\nhello\n/quit\n")
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.split("bot> ")[1:]]
    assert len(replies) == 3
    assert "(new chat)" in result.stdout
    # after /clear the same first message gets the same greedy answer as at the start
    assert replies[0].split("\n")[0] == replies[2].split("\n")[0]


def test_prompt_from_stdin_drops_the_trailing_newline(built_in):
    piped = run("chat", "-p", "-", "-t", "0", "-m", "30", stdin="What is 17*23?\n", env=built_in)
    direct = run("chat", "-p", "What is 17*23?", "-t", "0", "-m", "30", env=built_in)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == direct.stdout and "391" in direct.stdout


def test_an_empty_prompt_is_an_error(capfd, monkeypatch):
    assert_one_error_line(run("chat", "-p", ""), "the prompt is empty")
    assert_one_error_line(run_here(capfd, "chat", "-p", " \n\t"), "the prompt is empty")
    for stdin in (b"", b"\n\n", b"  \r\n"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        assert_one_error_line(run_here(capfd, "chat", "-p", "-"), "the prompt is empty")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9?")))
    assert_one_error_line(run_here(capfd, "chat", "-p", "-"), "UTF-8")


def test_a_closed_stdin_is_an_error(capfd, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of `nanochat-py ... <&-`
    assert_one_error_line(run_here(capfd, "chat", "-s", SOURCE, "-p", "-"), "stdin")
    assert_one_error_line(run_here(capfd, "chat", "-s", SOURCE), "stdin", "-p")


def test_a_reader_that_goes_away_ends_the_answer_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -c 1` once it has its byte: every write now fails with EPIPE
    try:
        result = subprocess.run([*COMMAND, "chat", "-s", SOURCE, "-p", "hi", "-m", "20"], stdout=write_end,
                                stderr=subprocess.PIPE, timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    assert result.stderr == b""
    assert result.returncode in (0, 141)


def test_usage_errors_are_one_line_and_help_still_works(capfd):
    assert_one_error_line(run("chat", "--temperature", "warm"), "--temperature", "warm")
    for args in (["chat", "--bogus"], ["export"], ["frobnicate"], [], ["train"], ["chat", "-m", "ten"]):
        assert_one_error_line(run_here(capfd, *args))
    helped = run_here(capfd, "chat", "--help")
    assert helped.returncode == 0 and "--temperature" in helped.stdout and len(helped.stdout.splitlines()) > 10


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-t", "-1"], "--temperature"),
        (["-t", "nan"], "--temperature"),
        (["-t", "inf"], "--temperature"),
        (["-t", "2.5"], "--temperature"),
        (["-k", "-1"], "--top-k"),
        (["-k", "201"], "--top-k"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "nan"], "--top-p"),
        (["-m", "0"], "--max-tokens"),
        (["-m", "-1"], "--max-tokens"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**64)], "--seed"),
        (["--dtype", "int2"], "fp32, bf16"),
        (["--device", "gpu0"], "unknown device"),
        (["-s", "/no/such/dir"], "does not exist"),
        (["-s", str(Path(__file__).parent)], "no checkpoint in"),
        (["-s", str(G5 / "expected.json")], "not a checkpoint"),
    ],
)
def test_bad_flags_are_one_line(capfd, args, fragment):
    assert_one_error_line(run_here(capfd, "chat", "-p", "hi", *args), fragment)


def test_server_top_k_range_is_accepted(capfd):
    for k in ("0", "200"):
        result = run_here(capfd, "chat", "-s", SOURCE, "-p", "hi", "-k", k, "-m", "2")
        assert result.returncode == 0, result.stderr


def test_unreadable_or_broken_files_are_one_line(capfd, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model_000042.pt", "meta_000042.json"):
        (broken / name).write_bytes((G5 / "model" / name).read_bytes()[:100])
    (broken / "tokenizer.pkl").mkdir()  # a directory where a file belongs
    assert_one_error_line(run_here(capfd, "chat", "-s", str(broken), "-p", "hi"), str(broken))
    meta_is_a_dir = tmp_path / "meta-dir"
    meta_is_a_dir.mkdir()
    (meta_is_a_dir / "model_000042.pt").write_bytes((G5 / "model" / "model_000042.pt").read_bytes())
    (meta_is_a_dir / "meta_000042.json").mkdir()
    assert_one_error_line(run_here(capfd, "chat", "-s", str(meta_is_a_dir), "-p", "hi"))


def test_fp16_is_refused_with_what_is_supported(capfd):
    assert_one_error_line(run_here(capfd, "chat", "-s", SOURCE, "-p", "hi", "--dtype", "fp16"), "fp16", "fp32", "bf16")


def test_train_data_without_a_word_list_says_how_to_get_one(capfd, tmp_path):
    result = run_here(capfd, "train", "data", "--words", str(tmp_path / "words"), "--out", str(tmp_path / "out"))
    assert_one_error_line(result, "wamerican", "--words")
    if not Path("/usr/share/dict/words").exists():  # the default list, from wamerican
        assert_one_error_line(run_here(capfd, "train", "data", "--out", str(tmp_path / "out")), "wamerican")


def test_train_tokenizer_says_the_smallest_vocab_size(capfd, tmp_path):
    (tmp_path / "text.txt").write_text("some text " * 100)
    result = run_here(capfd, "train", "tokenizer", "--input", str(tmp_path / "text.txt"), "--vocab-size", "100",
                 "--out", str(tmp_path / "tok"))  # fmt: skip
    assert_one_error_line(result, "--vocab-size", "at least 265")


def test_export_says_what_it_writes_and_its_files_are_readable(capfd, tmp_path):
    assert_one_error_line(run_here(capfd, "export", "-s", SOURCE, "--out", str(tmp_path), "--dtype", "int8"),
                          "fp32", "bf16")  # fmt: skip
    assert not any(tmp_path.iterdir())
    result = run_here(capfd, "export", "-s", SOURCE, "--out", str(tmp_path / "out"), "--dtype", "bf16")
    assert result.returncode == 0, result.stderr
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "out").iterdir()}
    assert "model_000042.safetensors" in modes and set(modes.values()) == {oct(0o666 & ~_umask())}
    assert nc.load(tmp_path / "out", device="cpu").config == nc.load(SOURCE, device="cpu").config


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_unknown_slash_command_is_not_sent_to_the_model():
    result = run("chat", "-s", SOURCE, "-t", "0", "-m", "4", stdin="/hepl\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert "unknown command /hepl" in result.stdout and "/clear" in result.stdout
    assert "bot> " not in result.stdout
