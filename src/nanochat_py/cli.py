"""The `nanochat-py` command line: `chat`, `serve`, `train ...`, `eval` and `export`."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from .arguments import MAX_SEED, Parser, real, whole
from .errors import NanochatError
from .sources import PHASES

HELP = "commands: /clear starts a new chat, /help shows this, /quit (or Ctrl-D) exits, Ctrl-C stops a reply"
COMMANDS = {"/clear": "clear", "/quit": "quit", "/exit": "quit", "/q": "quit", "/help": "help", "/?": "help"}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="nanochat-py", description="Run nanochat models.")
    commands = parser.add_subparsers(dest="command", required=True)
    model = Parser(add_help=False)
    model.add_argument(
        "--source",
        "-s",
        default=None,
        help="checkpoint dir, nanochat base dir, model file, transformers dir or hf:owner/repo[@rev]",
    )
    model.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    model.add_argument("--dtype", default=None,
                       help="fp32, bf16, int8 or int4 (CPU, weight-only) (default: fp32; bf16 on CUDA)")  # fmt: skip
    model.add_argument("--temperature", "-t", type=real(0, 2), default=0.6, help="0-2, 0 = greedy (default 0.6)")
    model.add_argument("--top-k", "-k", type=whole(0, 200), default=50,
                       help="sample from the k most likely tokens, 0-200; 0 = off (50)")  # fmt: skip
    model.add_argument("--top-p", type=real(0, 1, low_open=True), default=1.0,
                       help="nucleus sampling mass in (0, 1] (default 1 = off)")  # fmt: skip
    model.add_argument(
        "--min-p",
        type=real(0, 1),
        default=0.0,
        help="drop tokens less likely than min-p times the most likely one, 0-1 (default 0 = off)",
    )
    model.add_argument(
        "--repetition-penalty",
        type=real(0, 2, low_open=True),
        default=1.0,
        help="divide the logits of tokens already in the text (CTRL), in (0, 2] (default 1 = off)",
    )
    model.add_argument(
        "--presence-penalty",
        type=real(-2, 2),
        default=0.0,
        help="subtract from tokens already in the reply (OpenAI), -2 to 2 (default 0 = off)",
    )
    model.add_argument(
        "--frequency-penalty",
        type=real(-2, 2),
        default=0.0,
        help="subtract this times each token's count in the reply (OpenAI), -2 to 2 (default 0)",
    )
    model.add_argument("--max-tokens", "-m", type=whole(1), default=512, help="longest reply in tokens (default 512)")
    model.add_argument("--seed", type=whole(0, MAX_SEED), default=None, help="make sampling repeatable (0 or more)")

    chat = commands.add_parser("chat", parents=[model], help="chat in the terminal, or answer one prompt (-p)")
    chat.add_argument("-p", "--prompt", default=None, help="answer this one prompt and exit ('-' reads stdin)")
    chat.add_argument("--system", default=None, help="a system prompt, merged into the first user message")
    chat.add_argument("--step", default=None, help="checkpoint step inside a checkpoint dir (default: the last)")
    chat.add_argument("--phase", default=None, choices=PHASES, help="pick a phase inside a nanochat base dir")

    serve = commands.add_parser("serve", parents=[model], help="web UI, nanochat API and OpenAI API over HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on; names and IPv6 work (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (8000)")
    serve.add_argument("--num-workers", type=int, default=1, help="model replicas; one per GPU on several GPUs (1)")
    serve.add_argument("--max-batch", type=int, default=16, help="requests one worker decodes together (16)")
    serve.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond this get 503 (64)")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on the API routes")
    serve.add_argument("--cors-origins", default="", help="comma-separated origins allowed cross-origin (none)")
    serve.add_argument("--allowed-hosts", default="",
                       help="comma-separated Host names to answer besides the defaults (loopback names; bound "
                            "beyond loopback also IP addresses and this machine's name); '*' = any")  # fmt: skip
    serve.add_argument("--ui-path", default=None, help="serve this HTML file at / instead of the built-in UI")
    serve.add_argument("--logo-path", default=None, help="serve this SVG at /logo.svg instead of the built-in one")
    serve.add_argument("--log-messages", action="store_true", help="log prompts and replies (off by default)")
    _add_training_commands(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="nanochat-py: %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # the Hub client's retry chatter is not ours to print
    try:
        return _run(parser, args)
    except NanochatError as e:
        return _error(str(e))
    except OSError as e:  # BrokenPipeError is one, but not an error: see _run
        return _error(f"{e.strerror or e}: {e.filename}" if e.filename else str(e) or type(e).__name__)
    except KeyboardInterrupt:
        return 130


def _run(parser: argparse.ArgumentParser, args) -> int:
    try:
        if args.command == "bench":
            return _bench(args)
        if args.command in ("train", "eval", "export"):
            return _run_training_command(args)
        return _serve(parser, args) if args.command == "serve" else _chat(args)
    except BrokenPipeError:
        # the reader went away (`... | head`): stop quietly as Unix tools do, and point stdout at /dev/null so
        # the interpreter's last flush at exit does not fail on the closed pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool the closed pipe stopped


def _error(message: str) -> int:
    """The one error line: a message from deep inside (a file's parser, the Hub) may span several lines."""
    message = re.sub(r"\s*\n\s*", " ", message.strip())
    print(f"nanochat-py: error: {message}", file=sys.stderr)
    return 2


TRAIN_STAGES = {
    "tokenizer": "train a BPE tokenizer (rustbpe) on text files",
    "data": "generate the SFT conversations and held-out problems",
    "base": "pretrain a fresh model of a given --depth on text",
    "sft": "fine-tune any checkpoint on conversations",
    "rl": "reinforce exact answers on arithmetic / letter counting",
}


def _stage_module(name: str):
    import importlib

    if name == "eval":
        return importlib.import_module(".evals.command", __package__)
    module = {"tokenizer": "tokenizer_training", "data": "make_data"}.get(name, name)
    return importlib.import_module(f".train.{module}", __package__)


def _add_training_commands(commands) -> None:
    train = commands.add_parser("train", help="train: tokenizer, data, base, sft, rl (torchrun for several processes)")
    stages = train.add_subparsers(dest="stage", required=True)
    for name, summary in TRAIN_STAGES.items():
        _stage_module(name).add_arguments(stages.add_parser(name, help=summary, description=summary))
    evaluate = commands.add_parser(
        "eval", help="CORE, ChatCORE, bits per byte, held-out tasks; report card, model card, JSON, PNG"
    )
    _stage_module("eval").add_arguments(evaluate)
    bench = commands.add_parser("bench", help="prefill/decode speed and bandwidth use, beside transformers")
    bench.add_argument("--source", "-s", default=None, help="a checkpoint to time (default: a random --shape)")
    bench.add_argument("--shape", choices=("d2", "d12", "d20", "d32"), default="d12", help="random G0 shape (d12)")
    bench.add_argument("--compare", default="transformers", help="transformers, or '' for none (G0 models only)")
    bench.add_argument("--dtype", default="fp32,bf16,int8", help="comma-separated: fp32, bf16, int8, int4")
    bench.add_argument("--batch", default="1,8", help="comma-separated decode batch sizes (1,8)")
    bench.add_argument("--steps", type=int, default=32, help="timed decode steps per batch size (32)")
    bench.add_argument("--prompt", type=int, default=512, help="prefill length in tokens (512)")
    bench.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    export = commands.add_parser(
        "export", help="re-save a checkpoint: nanochat's layout as safetensors, or a transformers directory"
    )
    export.add_argument("--source", "-s", required=True, help="any checkpoint nanochat_py.load accepts")
    export.add_argument("--out", required=True, help="directory to write")
    export.add_argument("--dtype", default="bf16", type=_export_dtype, help="fp32 or bf16 (bf16)")
    export.add_argument(
        "--format",
        choices=("native", "transformers"),
        default="native",
        help="native: nanochat's layout (model_*.safetensors + meta json + tokenizer.pkl); transformers: "
        "config.json + model.safetensors + tokenizer.json for transformers, vLLM, SGLang, TGI, the Hub (native)",
    )


def _export_dtype(text: str) -> str:
    if text.lower() not in ("fp32", "float32", "bf16", "bfloat16"):
        raise argparse.ArgumentTypeError(
            f"export writes fp32 or bf16 weights, not {text!r} (int8 and int4 are chosen when loading: --dtype int4)"
        )
    return text


def _run_training_command(args) -> int:
    if args.command == "export":
        return _export(args)
    if args.command == "eval":
        evals = _stage_module("eval")
        print("\n".join(evals.summary(evals.run(args))))
        return 0
    _stage_module(args.stage).run(args)
    return 0


def _bench(args) -> int:
    from . import bench
    from .loader import load, pick_device

    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    unknown = set(dtypes) - {"fp32", "bf16", "int8", "int4"}
    if unknown:
        raise NanochatError(f"unknown --dtype {', '.join(sorted(unknown))}; use fp32, bf16, int8, int4")
    try:
        batches = sorted({int(b) for b in args.batch.split(",") if b.strip()})
    except ValueError:
        raise NanochatError(f"--batch {args.batch!r} is not a comma-separated list of whole numbers") from None
    if not batches or batches[0] < 1 or args.steps < 1 or args.prompt < 1:
        raise NanochatError("--batch sizes, --steps and --prompt must be at least 1")
    compare = [c.strip() for c in args.compare.split(",") if c.strip()]
    if set(compare) - {"transformers"}:
        raise NanochatError(f"unknown --compare {args.compare!r}; use transformers, or '' for none")
    device = pick_device(args.device)
    tokenizer = None
    if args.source:
        bot = load(args.source, device=device, dtype="fp32")
        model, tokenizer = bot.model, bot.tokenizer
    else:
        model = bench.random_published(args.shape, device=device)
    report = bench.run(model, dtypes, batches, args.steps, compare, tokenizer, args.prompt)
    print(bench.to_json(report) if args.json else bench.table(report))
    return 0


def _export(args) -> int:
    from .checkpoint import read_meta, save_checkpoint
    from .loader import load, pick_dtype
    from .sources import resolve

    bot = load(args.source, device="cpu", dtype="fp32")
    dtype = pick_dtype(args.dtype, bot.device)
    if args.format == "transformers":
        from .hf_export import export_transformers

        print(f"wrote {export_transformers(bot, args.out, dtype)}")
        return 0
    files = resolve(args.source)
    meta = read_meta(files.meta) if files.layout == "native" else {}
    extra = {k: v for k, v in meta.items() if k not in ("step", "model_config")}
    step = meta.get("step", 0)
    step = step if isinstance(step, int) and step >= 0 else 0
    path = save_checkpoint(bot.model, args.out, step, extra, fmt="safetensors", dtype=dtype, tokenizer=bot.tokenizer)
    print(f"wrote {path}")
    return 0


def _serve(parser: argparse.ArgumentParser, args) -> int:
    from pathlib import Path

    from .server.app import Settings
    from .server.serve import serve

    for flag in ("num_workers", "max_batch", "max_queue"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535 (0 picks a free port), got {args.port}")
    for path in (args.ui_path, args.logo_path):
        if path and not Path(path).is_file():
            parser.error(f"{path} is not a file")
    settings = Settings(
        **_sampling(args), max_tokens=args.max_tokens,
        seed=args.seed, api_key=args.api_key, cors_origins=tuple(o for o in args.cors_origins.split(",") if o),
        ui_path=Path(args.ui_path) if args.ui_path else None,
        logo_path=Path(args.logo_path) if args.logo_path else None,
        log_messages=args.log_messages, model_name=str(args.source or "nanochat"),
    )  # fmt: skip
    if args.log_messages:
        logging.getLogger("nanochat_py.server").setLevel(logging.INFO)
    allowed_hosts = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    return serve(args.source, args.host, args.port, settings, args.num_workers, args.max_batch, args.max_queue,
                 args.device, args.dtype, allowed_hosts)  # fmt: skip


def _chat(args) -> int:
    from .loader import load

    if sys.stdin is None and args.prompt in (None, "-"):  # started with stdin closed (`<&-`)
        raise NanochatError("stdin is closed: pass the prompt with -p TEXT, or give chat a terminal or a pipe")
    if sys.stdout is None:
        raise NanochatError("stdout is closed: there is nowhere to write the answer")
    prompt = _prompt(args.prompt)
    bot = load(args.source, device=args.device, dtype=args.dtype, step=args.step, phase=args.phase)
    sampling = dict(**_sampling(args), seed=args.seed)
    history = [{"role": "system", "content": args.system}] if args.system else []
    if prompt is not None:  # one answer, nothing else on stdout
        messages = [*history, {"role": "user", "content": prompt}]
        for text in bot.chat(messages, stream=True, max_tokens=args.max_tokens, **sampling):
            sys.stdout.write(text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    return _interactive(bot, history, args.max_tokens, sampling)


def _sampling(args) -> dict:
    """The sampling flags chat and serve share, as the keywords the Python API and the server settings take."""
    names = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
    return {name: getattr(args, name) for name in names}


def _prompt(flag: str | None) -> str | None:
    """-p's prompt: `-` reads stdin, without the newline `echo` ends it with (the model would see it)."""
    if flag is None:
        return None
    prompt = flag
    if flag == "-":
        try:
            prompt = sys.stdin.buffer.read().decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise NanochatError(f"the prompt on stdin is not UTF-8 text (byte {e.start})") from None
    if not prompt.strip():
        raise NanochatError("the prompt is empty: pass some text with -p TEXT, or pipe it in with -p -")
    return prompt


def _interactive(bot, system: list[dict], max_tokens: int, sampling: dict) -> int:
    from .chatbot import readable

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    color = sys.stdout.isatty()
    dim, bold, reset = ("\033[2m", "\033[1m", "\033[0m") if color else ("", "", "")
    print(f"{bot!r}\n{HELP}", file=sys.stderr)
    messages = list(system)
    while True:
        try:
            user = input(f"{bold}you>{reset} ")
        except EOFError:
            print()
            return 0
        command = COMMANDS.get(user.strip().lower())
        if command == "quit":
            return 0
        if command == "clear":
            messages = list(system)
            print(f"{dim}(new chat){reset}")
            continue
        if command == "help":
            print(HELP)
            continue
        if user.startswith("/"):  # a typo'd command must not go to the model as a message
            print(f"unknown command {user.split()[0]}; {HELP} (start a line with a space to send a '/' message)")
            continue
        if not user.strip():
            continue
        messages.append({"role": "user", "content": user})
        parts: list[dict] = []
        sys.stdout.write(f"{bold}bot>{reset} ")
        try:
            for text in readable(_kept(bot.reply(messages, max_tokens=max_tokens, **sampling), parts)):
                sys.stdout.write(text)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(f"{dim} (stopped){reset}")
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": parts or ""})


def _kept(pieces, parts: list[dict]):
    """Pass reply pieces through, keeping them as assistant content parts for the chat history."""
    for piece in pieces:
        if parts and parts[-1]["type"] == piece.kind:
            parts[-1]["text"] += piece.text
        else:
            parts.append({"type": piece.kind, "text": piece.text})
        yield piece


if __name__ == "__main__":
    sys.exit(main())
