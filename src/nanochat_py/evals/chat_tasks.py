"""ChatCORE: ARC-Easy, ARC-Challenge, MMLU, GSM8K, HumanEval and SpellingBee, scored as nanochat's
`scripts/chat_eval.py` scores them (its defaults: greedy, one sample, 512 new tokens).

- Multiple choice (ARC, MMLU): the question rendered as nanochat renders it, one forward pass, and the
  answer is the letter whose token has the highest logit at the last prompt position, among the choices.
- GSM8K, SpellingBee: a greedy reply with the calculator in the loop, right when its final `#### <number>`
  equals the solution's.
- HumanEval: a greedy reply; its first code block (or all of it) with the prompt's imports, the unit tests
  and `check(<entry point>)`, run in the sandbox: right when it runs to the end.

Items come in nanochat's order (each dataset shuffled with seed 42; SpellingBee item i from seed 10^7 + i),
so `limit` takes the same first N as its `--max-problems`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..engine import Sequence
from ..errors import NanochatError
from ..tools import calculate
from . import sandbox
from .datasets import SPLITS, DataError, load_rows, load_words, shuffled
from .scores import TaskScore

MAX_NEW_TOKENS = 512  # chat_eval.py's -m default
RENDER_LIMIT = 2048  # nanochat's render_conversation keeps at most this many tokens of the conversation
SPELLING_BEE_SIZE = 256  # chat_eval.py's SpellingBee(size=256, split="test")
SPELLING_BEE_SEED = 10_000_000  # its test items' seeds start here


@dataclass
class Item:
    question: str  # the user's message
    solution: str  # the right letter, the final number, or HumanEval's unit tests
    letters: tuple[str, ...] = ()  # multiple choice: the letters to choose among
    entry_point: str = ""  # HumanEval: the function the unit tests check


@dataclass
class Outcome:
    question: str
    response: str  # the letter chosen, or the reply
    correct: bool


@dataclass(frozen=True)
class ChatTask:
    label: str  # as nanochat's report card names it
    baseline: float  # what guessing scores: 1 of 4 letters, 0 for open answers (nanochat's numbers)
    kind: str  # "choice", "number" or "code"
    items: Callable[[Path | None, int | None], list[Item]]  # (data, limit): the first `limit` items, None = all


# --- items -----------------------------------------------------------------------------------------------------


def multiple_choice(question: str, letters: Iterable[str], choices: Iterable[str]) -> str:
    """nanochat's rendering: each choice followed by its letter (no space before it: " A" is another token)."""
    lines = [
        f"Multiple Choice question: {question}",
        *(f"- {c}={letter}" for letter, c in zip(letters, choices, strict=False)),
    ]
    return "\n".join(lines) + "\n\nRespond only with the letter of the correct answer."


def _arc_items(task: str) -> Callable[[Path | None, int | None], list[Item]]:
    def items(data: Path | None, limit: int | None) -> list[Item]:
        out = []
        for row in shuffled(load_rows(SPLITS[task], data))[:limit]:
            letters, choices = tuple(row["choices"]["label"]), row["choices"]["text"]
            if row["answerKey"] not in letters:
                raise DataError(f"{SPLITS[task]}: answer {row['answerKey']!r} is not one of {list(letters)}")
            out.append(Item(multiple_choice(row["question"], letters, choices), row["answerKey"], letters))
        return out

    return items


def _mmlu_items(data: Path | None, limit: int | None) -> list[Item]:
    letters = ("A", "B", "C", "D")
    out = []
    for row in shuffled(load_rows(SPLITS["mmlu"], data))[:limit]:
        if len(row["choices"]) != 4:
            raise DataError(f"{SPLITS['mmlu']}: a question with {len(row['choices'])} choices; MMLU has 4")
        out.append(Item(multiple_choice(row["question"], letters, row["choices"]), letters[row["answer"]], letters))
    return out


def _gsm8k_items(data: Path | None, limit: int | None) -> list[Item]:
    # the solution's number is read from its text after the last <<calculator>> call, as nanochat does
    rows = shuffled(load_rows(SPLITS["gsm8k"], data))[:limit]
    return [Item(row["question"], final_number(re.split(r"<<[^>]+>>", row["answer"])[-1])) for row in rows]


def _humaneval_items(data: Path | None, limit: int | None) -> list[Item]:
    rows = shuffled(load_rows(SPLITS["humaneval"], data))[:limit]
    return [Item(row["prompt"], row["test"], entry_point=row["entry_point"]) for row in rows]


def _spelling_bee_items(data: Path | None, limit: int | None) -> list[Item]:
    words = load_words(data)
    return [spelling_bee_item(words, i) for i in range(SPELLING_BEE_SIZE)[:limit]]


def spelling_bee_item(words: list[str], index: int) -> Item:
    """Test item `index` of nanochat's SpellingBee: the same draws from the same seeded generator."""
    rng = random.Random(SPELLING_BEE_SEED + index)
    word = rng.choice(words)
    if not word:
        raise DataError(f"SpellingBee item {index} drew an empty line of the word list; remove empty lines")
    letter = rng.choice(word) if rng.random() < 0.9 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    template = rng.choice(SPELLING_BEE_TEMPLATES)
    if rng.random() < 0.3:
        template = template.lower()
    letter_quote, word_quote = rng.choice(["", "'", '"']), rng.choice(["", "'", '"'])
    question = template.format(letter=f"{letter_quote}{letter}{letter_quote}", word=f"{word_quote}{word}{word_quote}")
    if rng.random() < 0.5:
        question += "?"
    return Item(question, str(word.count(letter)))


# nanochat's SpellingBee question templates (tasks/spellingbee.py, MIT licence), verbatim and in order:
# item i draws one of them by position
SPELLING_BEE_TEMPLATES = (
    "How many {letter} are in the word {word}",
    "How many {letter} are in {word}",
    "Count the number of {letter} in {word}",
    "How many times does {letter} appear in {word}",
    "What's the count of {letter} in {word}",
    "In the word {word}, how many {letter} are there",
    "How many letter {letter} are in the word {word}",
    "Count how many {letter} appear in {word}",
    "Tell me the number of {letter} in {word}",
    "How many occurrences of {letter} are in {word}",
    "Find the count of {letter} in {word}",
    "Can you count the {letter} letters in {word}",
    "What is the frequency of {letter} in {word}",
    "How many {letter}s are in {word}",
    "How many {letter}'s are in {word}",
    "Count all the {letter} in {word}",
    "How many times is {letter} in {word}",
    "Number of {letter} in {word}",
    "Total count of {letter} in {word}",
    "How many {letter} does {word} have",
    "How many {letter} does {word} contain",
    "What's the number of {letter} in {word}",
    "{word} has how many {letter}",
    "In {word}, count the {letter}",
    "How many {letter} appear in {word}",
    "Count the {letter} in {word}",
    "Give me the count of {letter} in {word}",
    "How many instances of {letter} in {word}",
    "Show me how many {letter} are in {word}",
    "Calculate the number of {letter} in {word}",
    "¿Cuántas {letter} hay en {word}?",
    "¿Cuántas veces aparece {letter} en {word}?",
    "Cuenta las {letter} en {word}",
    "¿Cuántas letras {letter} tiene {word}?",
    "{word}中有多少个{letter}",
    "{word}里有几个{letter}",
    "数一下{word}中的{letter}",
    "{word}这个词里有多少{letter}",
    "{word}에 {letter}가 몇 개 있나요",
    "{word}에서 {letter}의 개수는",
    "{word}에 {letter}가 몇 번 나오나요",
    "{word}라는 단어에 {letter}가 몇 개",
    "Combien de {letter} dans {word}",
    "Combien de fois {letter} apparaît dans {word}",
    "Compte les {letter} dans {word}",
    "Wie viele {letter} sind in {word}",
    "Wie oft kommt {letter} in {word} vor",
    "Zähle die {letter} in {word}",
    "{word}に{letter}は何個ありますか",
    "{word}の中に{letter}がいくつ",
    "{word}に{letter}が何回出てくる",
)

TASKS = {
    "arc-easy": ChatTask("ARC-Easy", 0.25, "choice", _arc_items("arc-easy")),
    "arc-challenge": ChatTask("ARC-Challenge", 0.25, "choice", _arc_items("arc-challenge")),
    "mmlu": ChatTask("MMLU", 0.25, "choice", _mmlu_items),
    "gsm8k": ChatTask("GSM8K", 0.0, "number", _gsm8k_items),
    "humaneval": ChatTask("HumanEval", 0.0, "code", _humaneval_items),
    "spellingbee": ChatTask("SpellingBee", 0.0, "number", _spelling_bee_items),
}


# --- grading ---------------------------------------------------------------------------------------------------

_FINAL_NUMBER = re.compile(r"#### (\-?[0-9\.\,]+)")  # GSM8K's own marker and normalisation (commas dropped)


def final_number(text: str) -> str | None:
    """The number after the first `#### `, without commas; None if there is none."""
    match = _FINAL_NUMBER.search(text)
    return match.group(1).strip().replace(",", "") if match else None


def humaneval_program(item: Item, reply: str) -> str:
    """The program nanochat runs: the prompt's imports, the reply's code, the tests, then the check call."""
    return f"{_leading_imports(item.question)}\n\n{_code_of(reply)}\n\n{item.solution}\ncheck({item.entry_point})"


def _leading_imports(prompt: str) -> str:
    """The import lines at the top of a prompt (comments and blank lines skipped), stripped."""
    imports = []
    for line in (line.strip() for line in prompt.split("\n")):
        if line.startswith(("import ", "from ")):
            imports.append(line)
        elif line and not line.startswith("#"):
            break
    return "\n".join(imports)


_CODE_BLOCK = re.compile(r"```(?:python)?\s*\n(.*?)\n```", re.DOTALL)


def _code_of(reply: str) -> str:
    """The first fenced code block of the reply, else the whole reply; stripped."""
    block = _CODE_BLOCK.search(reply)
    return (block.group(1) if block else reply).strip()


def is_correct(task: ChatTask, item: Item, response: str) -> bool:
    if task.kind == "choice":
        return response == item.solution
    if task.kind == "number":
        return final_number(response) == item.solution
    return sandbox.run_python(humaneval_program(item, response)).passed


# --- the model's answers ---------------------------------------------------------------------------------------


def prompt_ids(tok, question: str) -> list[int]:
    """nanochat's render_for_completion of a one-question chat (rendering capped at 2,048 tokens, as there)."""
    ids, _ = tok.render_conversation([{"role": "user", "content": question}], max_tokens=RENDER_LIMIT)
    return [*ids, tok.special("<|assistant_start|>")]


@torch.inference_mode()
def choose_letter(bot, item: Item) -> str:
    """The choice whose letter token the model rates highest right after the prompt."""
    tok, model = bot.tokenizer, bot.model
    letter_ids = []
    for letter in item.letters:
        ids = tok.encode(letter)
        if len(ids) != 1:
            raise DataError(f"the answer letter {letter!r} is {len(ids)} tokens for this tokenizer; it must be one")
        letter_ids.append(ids[0])
    ids = torch.tensor([prompt_ids(tok, item.question)], dtype=torch.long, device=model.device)
    logits = model(ids, last_only=True)[0, -1]
    return item.letters[int(logits[letter_ids].argmax())]


@torch.inference_mode()
def greedy_reply(bot, prompt: list[int], max_tokens: int = MAX_NEW_TOKENS) -> str:
    """nanochat's Engine at temperature 0: the reply up to <|assistant_end|> or <|bos|> (left out) or
    `max_tokens` tokens (tool output included), nanochat's calculator answers forced in after each call, and
    decoded with special tokens as text. Like nanochat it goes on past the model's context if need be."""
    model, tok = bot.model, bot.tokenizer
    sequence = Sequence(tok, calculator=nanochat_calculator)
    cache = model.new_cache(1, len(prompt) + max_tokens)
    logits = model(torch.tensor([prompt], dtype=torch.long, device=model.device), cache=cache, last_only=True)
    reply: list[int] = []
    while len(reply) < max_tokens:
        token, _ = sequence.next_token(int(logits[0, -1].argmax()))
        if token in sequence.stop_ids:
            break
        reply.append(token)
        sequence.feed(token)
        if len(reply) < max_tokens:
            column = torch.tensor([[token]], dtype=torch.long, device=model.device)
            logits = model(column, cache=cache, last_only=True)
    return tok.decode(reply)


_ARITHMETIC_CHARS = set("0123456789*+-/.() ")
_COUNT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'\"()._ ")
_REFUSED_WORDS = (
    "__", "import", "exec", "eval", "compile", "open", "file", "input", "raw_input", "globals", "locals", "vars",
    "dir", "getattr", "setattr", "delattr", "hasattr",
)  # fmt: skip


def nanochat_calculator(expression: str) -> str | None:
    """What nanochat's calculator answers, computed by our parser (tools.calculate) instead of `eval`.

    nanochat answers arithmetic (no `**`) and `'word'.count('x')`, but refuses a count call with a character
    outside letters, digits, quotes, parentheses, `._ `, or containing words such as `dir`, `file` or
    `open` anywhere (so `'directory'.count('r')` gets no answer). Commas are dropped first, as there.
    """
    expression = expression.replace(",", "")
    if set(expression) <= _ARITHMETIC_CHARS:
        return None if "**" in expression else calculate(expression)
    lowered = expression.lower()
    if not set(expression) <= _COUNT_CHARS or any(w in lowered for w in _REFUSED_WORDS) or ".count(" not in expression:
        return None
    return calculate(expression)


# --- scoring ---------------------------------------------------------------------------------------------------


def score_items(
    bot,
    task: str,
    *,
    data: Path | None = None,
    limit: int | None = None,
    max_tokens: int = MAX_NEW_TOKENS,
    progress: bool = False,
) -> list[Outcome]:
    """Every item's question, the model's answer and whether it is right, in nanochat's item order."""
    spec = _task(task)
    items = spec.items(data, limit)
    outcomes = []
    for item in tqdm(items, desc=spec.label, unit="item", disable=not progress, leave=False):
        if spec.kind == "choice":
            response = choose_letter(bot, item)
        else:
            response = greedy_reply(bot, prompt_ids(bot.tokenizer, item.question), max_tokens)
        outcomes.append(Outcome(item.question, response, is_correct(spec, item, response)))
    return outcomes


def evaluate(
    bot,
    task: str,
    *,
    data: Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    max_tokens: int = MAX_NEW_TOKENS,
    progress: bool = False,
) -> TaskScore:
    """Accuracy on one ChatCORE task, as nanochat's chat_eval.py computes it.

    data: a directory with the dataset in the Hub's layout (or the file itself; for SpellingBee the word
    list), else the Hugging Face cache (downloading once when online). limit: the first N items (nanochat's
    --max-problems). seed: unused, kept for one signature across suites: nanochat's settings are greedy and
    its item order is fixed.
    """
    del seed
    if limit is not None and limit < 1:
        raise DataError(f"the number of items must be at least 1, got {limit}")
    outcomes = score_items(bot, task, data=data, limit=limit, max_tokens=max_tokens, progress=progress)
    spec = _task(task)
    accuracy = sum(o.correct for o in outcomes) / len(outcomes)
    return TaskScore(spec.label, accuracy, len(outcomes), spec.baseline)


def chatcore(scores: Iterable[TaskScore]) -> float | None:
    """nanochat's ChatCORE: the mean centered accuracy of the six tasks; None unless all six were scored."""
    by_label = {s.task: s for s in scores}
    labels = [t.label for t in TASKS.values()]
    if not all(label in by_label for label in labels):
        return None
    return sum(by_label[label].centered for label in labels) / len(labels)


def _task(task: str) -> ChatTask:
    if task not in TASKS:
        raise NanochatError(f"unknown chat task {task!r}; choose from {', '.join(TASKS)}")
    return TASKS[task]
