"""`nanochat-py train rl`: policy gradient on verifiable tasks, with the calculator tool in the loop.

Each step samples several answers to a few training problems, rewards with 1 an answer the held-out judge
would pass (the right number from the right tool call, ended by itself within --max-tokens, no loop; see
evals/heldout.py) and 0 anything else, and pushes up the log-probability of the tokens the model chose in
proportion to (reward - mean reward of that problem). Rewarding the whole verdict, not just the number, is
what teaches the model to stop: a reply that repeats the right number until it is cut off earns nothing.
Tokens the tool wrote are context, not actions, and get no gradient.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..arguments import real, whole
from ..errors import NanochatError
from ..evals.heldout import Reply, judge, read_reply
from ..loader import load
from . import distributed, precision
from .optimizers import LearningRates, build_optimizers, lr_factor, set_lr_factor
from .options import add_loop_options, settings_from
from .tasks import (
    Problem,
    arithmetic_problem,
    honesty_problem,
    identity_problem,
    letter_problem,
    read_words,
    split_words,
)
from .trainer import lineage_of, restore_state, save_state

RL_RATES = LearningRates(matrix=0.002, embedding=0.03, unembedding=0.0004, scalar=0.05)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", "-s", required=True, help="any checkpoint nanochat_py.load accepts")
    p.add_argument(
        "--task",
        required=True,
        choices=("arithmetic", "letters", "mixed"),
        help="what to reward (mixed: arithmetic, letters, honesty and identity)",
    )
    p.add_argument("--words", default=None, help="word list for the letters task (one word per line)")
    p.add_argument("--samples", type=whole(1), default=8, help="answers sampled per problem (8)")
    p.add_argument("--temperature", type=real(0, 2), default=1.0, help="sampling temperature (1.0)")
    p.add_argument("--max-tokens", type=whole(1), default=64, help="longest sampled answer (64)")
    add_loop_options(p, steps=None, batch_size=4, lr=RL_RATES)


def run(args: argparse.Namespace) -> Path:
    if args.compile:
        raise NanochatError("--compile is for train base and sft: rl spends its time sampling, not in steps")
    procs = distributed.start(args.device)
    try:
        bot = load(args.source, device=procs.device, dtype="fp32")
        words = split_words(read_words(args.words)) if args.words else None
        if args.task in ("letters", "mixed") and not words:
            raise NanochatError("--task letters and mixed need --words FILE (e.g. /usr/share/dict/words)")
        settings = settings_from(args, "rl")
        settings.precision = precision.resolve(settings.precision, procs.device)
        model, tok = bot.model, bot.tokenizer
        optimizers = build_optimizers(model.requires_grad_(True), settings.lr)
        history, start = [], 0
        if settings.resume:
            start, history = restore_state(model, optimizers, settings.out_dir)
        if start >= settings.steps:
            raise NanochatError(f"{settings.out_dir} already holds step {start}; pass a larger --steps")
        meta = {"source": str(args.source), "lineage": lineage_of(args.source), "task": args.task}
        bar = tqdm(total=settings.steps, initial=start, desc="rl", unit="step", disable=not procs.is_main)
        for step in range(start, settings.steps):
            set_lr_factor(optimizers, lr_factor(step, settings.steps, settings.warmup, settings.warmdown_ratio))
            rng = random.Random(settings.seed * 1_000_003 + step * procs.world + procs.rank)
            problems = [_problem(rng, args.task, words) for _ in range(settings.batch_size)]
            with precision.autocast(settings.precision, procs.device):  # the policy-gradient forward passes
                rewards, loss = _step_loss(bot, problems, args, seed=rng.randrange(2**31))
            if loss is not None:
                model.train()
                loss.backward()
            procs.average_gradients(model)
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
            reward = procs.mean(rewards)
            history.append({"step": step + 1, "reward": round(reward, 4)})
            bar.set_postfix(reward=f"{reward:.3f}")
            bar.update(1)
            done = step + 1
            if done == settings.steps or (settings.save_every and done % settings.save_every == 0):
                path = save_state(model, tok, optimizers, done, history, settings, meta, procs)
        bar.close()
        return path
    finally:
        distributed.stop(procs)


def _problem(rng: random.Random, task: str, words: dict[str, list[str]] | None) -> Problem:
    if task == "mixed":  # the tool skills mostly; the rest keep RL from trading away what it does not reward
        task = rng.choices(("arithmetic", "letters", "honesty", "identity"), weights=(3, 3, 1, 1))[0]
    if task == "letters":
        return letter_problem(rng, words, "train")
    return {"arithmetic": arithmetic_problem, "honesty": honesty_problem, "identity": identity_problem}[task](
        rng, "train"
    )


def _step_loss(bot, problems: list[Problem], args, seed: int) -> tuple[float, torch.Tensor | None]:
    """Mean reward over all samples, and the policy-gradient loss (None when no sample's advantage is non-zero)."""
    model, tok = bot.model, bot.tokenizer
    all_rewards, terms, n_tokens = [], [], 0
    for i, problem in enumerate(problems):
        prompt = tok.render_for_completion([{"role": "user", "content": problem.question}])
        samples = _rollouts(bot, prompt, args, seed + i)
        rewards = torch.tensor([float(judge(problem, reply)["right"]) for _, _, reply in samples])
        all_rewards += rewards.tolist()
        advantages = rewards - rewards.mean()
        for (tokens, chosen, _), advantage in zip(samples, advantages.tolist(), strict=True):
            if advantage == 0.0 or not tokens:
                continue
            ids = torch.tensor([prompt + tokens], device=model.device)
            logits = model(ids[:, :-1])[0, len(prompt) - 1 :]
            logp = -F.cross_entropy(logits, ids[0, len(prompt) :], reduction="none")
            mask = torch.tensor(chosen, dtype=logp.dtype, device=logp.device)
            terms.append(-(advantage * logp * mask).sum())
            n_tokens += int(mask.sum())
    mean_reward = sum(all_rewards) / max(1, len(all_rewards))
    if not terms:
        return mean_reward, None
    return mean_reward, torch.stack(terms).sum() / max(1, n_tokens)


def _rollouts(bot, prompt: list[int], args, seed: int) -> list[tuple[list[int], list[bool], Reply]]:
    """`args.samples` answers: their tokens (ending with the stop token), which the model chose, and the reply."""
    n = args.samples
    tokens: list[list[int]] = [[] for _ in range(n)]
    chosen: list[list[bool]] = [[] for _ in range(n)]
    finished = [False] * n
    for step in bot.engine.generate(prompt, n, args.max_tokens, temperature=args.temperature, seed=seed):
        for i in range(n):
            if not finished[i]:
                tokens[i].append(step.tokens[i])
                chosen[i].append(not step.forced[i])
                finished[i] = step.done[i]
    return [
        (toks, ch, read_reply(bot.tokenizer, toks, ended))
        for toks, ch, ended in zip(tokens, chosen, finished, strict=True)
    ]
