"""The `nanochat-py chat` command as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nanochat_py as nc
from conftest import G5

SOURCE = str(G5 / "model")
SCRIPT = Path(sys.executable).parent / "nanochat-py"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "nanochat_py.cli"]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, text=True, timeout=120)


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
    assert result.returncode == 2 and "--top-p must be in (0, 1]" in result.stderr


def test_interactive_chat_keeps_history_and_clears_it():
    result = run("chat", "-s", SOURCE, "-t", "0", "-m", "8", stdin="hello\nand again\n/clear\nhello\n/quit\n")
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.split("bot> ")[1:]]
    assert len(replies) == 3
    assert "(new chat)" in result.stdout
    # after /clear the same first message gets the same greedy answer as at the start
    assert replies[0].split("\n")[0] == replies[2].split("\n")[0]
