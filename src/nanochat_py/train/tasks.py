"""Generated conversations for the assistant, and the held-out problems it is scored on.

Five kinds of conversation: arithmetic solved with the calculator tool, counting letters with the `.count`
tool, who it is, greetings and small talk, and saying "I don't know" instead of making things up.

Held-out problems never appear in training: every arithmetic problem (a, op, b) and every word belongs to
exactly one side of a fixed hash split, so the eval set is disjoint from anything the generator can emit.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

NAME = "nanochat-py"
IDENTITY = (
    f"I'm {NAME}, a very small language model that runs right here on your computer. I can chat a little, "
    "do arithmetic with my calculator tool, and count letters in words. I know very little about the world, "
    "so please don't rely on me for facts."
)
IDENTITY_SHORT = (
    f"My name is {NAME}. I'm a tiny language model: I can do arithmetic with a calculator and count letters, "
    "but I know very little else."
)
ABILITIES = (
    "I can add, subtract and multiply numbers using my calculator tool, and count how many times a letter "
    "appears in a word. I can also say hello and chat a little. I can't browse the internet, and I know very "
    "few facts, so I will tell you when I don't know something."
)
DONT_KNOW = (
    "I don't know. I'm a very small model without internet access, and I'd rather tell you that than guess.",
    "Sorry, I don't know that. I'm a tiny model and I know very little about the world.",
    "I'm not able to answer that: I don't have that knowledge, and I won't make something up.",
)
OPS = {"+": ("plus", "add", "sum"), "-": ("minus", "subtract", "difference"), "*": ("times", "multiply", "product")}
HELD_OUT_PERCENT = 10


def held_out(key: str) -> bool:
    """The fixed train/eval split: True for the ~10% of problems and words kept for evaluation."""
    return zlib.crc32(key.encode()) % 100 < HELD_OUT_PERCENT


@dataclass
class Problem:
    task: str
    question: str
    answer: str  # what the reply must contain (the exact number, or the name)

    def to_dict(self) -> dict:
        return {"task": self.task, "question": self.question, "answer": self.answer}


# --- arithmetic ------------------------------------------------------------------------------------------


def _operands(rng: random.Random) -> tuple[int, str, int]:
    op = rng.choice("+-*")
    digits = (rng.choice((2, 3)), rng.choice((2, 3)))
    a, b = (rng.randint(10 ** (d - 1), 10**d - 1) for d in digits)
    return a, op, b


def _arithmetic_question(rng: random.Random, a: int, op: str, b: int) -> str:
    word = OPS[op][0]
    templates = [
        f"What is {a} {op} {b}?",
        f"What is {a}{op}{b}?",
        f"what's {a} {word} {b}?",
        f"Calculate {a} {op} {b}.",
        f"Compute {a} {word} {b}",
        f"{a} {op} {b} = ?",
        f"How much is {a} {word} {b}?",
        f"Can you work out {a} {op} {b} for me?",
        f"Please tell me what {a} {word} {b} is.",
    ]
    if op == "+":
        templates += [f"Add {a} and {b}.", f"What is the sum of {a} and {b}?"]
    elif op == "-":
        templates += [f"Subtract {b} from {a}.", f"What do you get if you take {b} away from {a}?"]
    else:
        templates += [f"Multiply {a} by {b}.", f"What is the product of {a} and {b}?"]
    return rng.choice(templates)


def _arithmetic(rng: random.Random, split: str) -> tuple[int, str, int, str]:
    """(a, op, b, question) for a problem on the given side ("train" or "eval") of the split."""
    while True:
        a, op, b = _operands(rng)
        if held_out(f"{a}{op}{b}") == (split == "eval"):
            return a, op, b, _arithmetic_question(rng, a, op, b)


def _value(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def arithmetic_problem(rng: random.Random, split: str) -> Problem:
    a, op, b, question = _arithmetic(rng, split)
    return Problem("arithmetic", question, str(_value(a, op, b)))


def arithmetic_conversation(rng: random.Random) -> list[dict]:
    a, op, b, question = _arithmetic(rng, "train")
    result = str(_value(a, op, b))
    answer = rng.choice([f"{a} {op} {b} = {result}.", f"The answer is {result}.", f"{result}", f"It's {result}."])
    return _tool_exchange(question, f"{a}{op}{b}", result, answer)


def _tool_exchange(question: str, call: str, output: str, answer: str) -> list[dict]:
    """A user question and an assistant reply that calls the tool, gets its output, then answers."""
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": [
            {"type": "python", "text": call},
            {"type": "python_output", "text": output},
            {"type": "text", "text": answer},
        ]},
    ]  # fmt: skip


# --- letter counting -------------------------------------------------------------------------------------


def _letter_question(rng: random.Random, word: str, letter: str) -> str:
    return rng.choice([
        f"How many {letter}'s are in {word}?",
        f"How many times does the letter {letter} appear in {word}?",
        f"Count the letter {letter} in {word}.",
        f"how many {letter} are there in {word}",
        f"In the word {word}, how many times does {letter} occur?",
        f"Can you count the {letter}s in {word}?",
    ])  # fmt: skip


def split_words(words: list[str]) -> dict[str, list[str]]:
    """A word list as its training and held-out sides."""
    return {"train": [w for w in words if not held_out(w)], "eval": [w for w in words if held_out(w)]}


def _letter(rng: random.Random, pools: dict[str, list[str]], split: str) -> tuple[str, str, str]:
    """(word, letter, question) with the word from the given side of the split (pools: see split_words)."""
    pool = pools[split]
    if not pool:
        raise ValueError(f"the word list has no {split} words")
    word = rng.choice(pool)
    # mostly letters that are in the word, sometimes one that is not (the answer is then 0)
    letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    return word, letter, _letter_question(rng, word, letter)


def letter_problem(rng: random.Random, pools: dict[str, list[str]], split: str) -> Problem:
    word, letter, question = _letter(rng, pools, split)
    return Problem("letters", question, str(word.count(letter)))


def letter_conversation(rng: random.Random, pools: dict[str, list[str]]) -> list[dict]:
    word, letter, question = _letter(rng, pools, "train")
    n = str(word.count(letter))
    answer = rng.choice([
        f"There {'is' if n == '1' else 'are'} {n} {letter} in {word}.",
        f"The letter {letter} appears {n} {'time' if n == '1' else 'times'} in {word}.",
        f"{n}",
    ])  # fmt: skip
    # " word" keeps its leading space so its tokens are the very tokens of the question: a copy
    return _tool_exchange(question, f"' {word}'.count('{letter}')", n, answer)


# --- who it is, small talk, not knowing -----------------------------------------------------------------

IDENTITY_QUESTIONS = (
    "Who are you?", "who are you?", "What is your name?", "What's your name?", "Tell me about yourself.",
    "Introduce yourself.", "Are you ChatGPT?", "What are you?", "Who made you?", "Are you a person?",
    "What should I call you?", "Which model are you?",
)  # fmt: skip
# phrasings only ever used for evaluation
IDENTITY_EVAL_QUESTIONS = (
    "Who are you?", "Who am I talking to?", "Could you tell me your name?", "what is ur name", "Who are you exactly?",
    "Please introduce yourself", "What do people call you?", "Hey, who are you?",
)  # fmt: skip
ABILITY_QUESTIONS = ("What can you do?", "How can you help me?", "What are you good at?", "What can't you do?")
GREETINGS = (
    ("Hi", "Hi! How can I help you today?"),
    ("Hello!", "Hello! What can I do for you?"),
    ("hey", "Hey! Ask me to add, subtract or multiply numbers, or to count letters in a word."),
    ("Good morning", "Good morning! How can I help?"),
    ("How are you?", "I'm doing well, thanks for asking! How can I help you?"),
    ("Thanks!", "You're welcome!"),
    ("Thank you so much", "Happy to help!"),
    ("Bye", "Goodbye! Have a nice day."),
    ("Goodbye!", "Bye! Come back any time."),
    ("Nice to meet you", "Nice to meet you too! What would you like to do?"),
    ("Tell me a joke", "Why did the computer go to the doctor? Because it had a virus!"),
    ("That's great", "Glad to hear it!"),
)
UNKNOWABLE = (
    "What is the capital of {c}?", "Who is the president of {c}?", "What's the weather like today?",
    "Who won the world cup in {y}?", "What happened in {y}?", "What is the population of {c}?",
    "What time is it right now?", "What's the price of bitcoin today?", "Who wrote the novel {b}?",
    "What is the latest news?", "When was {c} founded?", "How tall is the tallest building in {c}?",
    "Can you look up {b} on the internet?", "What is the square root of {n}?", "Translate {b} into French.",
)  # fmt: skip
COUNTRIES = ("France", "Peru", "Japan", "Kenya", "Norway", "Chile", "Egypt", "India", "Canada", "Spain", "Ghana")
BOOKS = ("The Silent Shore", "Blue River", "A Winter Road", "The Glass Garden", "Northern Lights", "Iron Bells")


def identity_problem(rng: random.Random) -> Problem:
    return Problem("identity", rng.choice(IDENTITY_EVAL_QUESTIONS), NAME)


def small_talk_conversation(rng: random.Random) -> list[dict]:
    kind = rng.random()
    if kind < 0.35:
        question, reply = rng.choice(IDENTITY_QUESTIONS), rng.choice((IDENTITY, IDENTITY_SHORT))
    elif kind < 0.5:
        question, reply = rng.choice(ABILITY_QUESTIONS), ABILITIES
    elif kind < 0.75:
        question, reply = rng.choice(GREETINGS)
    else:
        template = rng.choice(UNKNOWABLE)
        question = template.format(c=rng.choice(COUNTRIES), y=rng.randint(1950, 2024), b=rng.choice(BOOKS),
                                   n=rng.randint(2, 999))  # fmt: skip
        reply = rng.choice(DONT_KNOW)
    return [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]


# --- mixtures --------------------------------------------------------------------------------------------


def conversations(n: int, words: list[str], seed: int = 0) -> list[dict]:
    """n training conversations in nanochat's {"messages": [...]} form; some have two or three turns."""
    rng = random.Random(seed)
    pools = split_words(words)
    makers = [
        (0.45, lambda: arithmetic_conversation(rng)),
        (0.35, lambda: letter_conversation(rng, pools)),
        (0.20, lambda: small_talk_conversation(rng)),
    ]
    out = []
    for _ in range(n):
        turns = 1 if rng.random() < 0.75 else rng.choice((2, 3))
        messages = []
        for _ in range(turns):
            r, acc = rng.random(), 0.0
            for weight, make in makers:
                acc += weight
                if r < acc:
                    messages += make()
                    break
        out.append({"messages": messages})
    return out


def problems(task: str, n: int, words: list[str] | None = None, seed: int = 1) -> list[Problem]:
    """n held-out problems of `task` (arithmetic, letters, identity): none of them can occur in training."""
    rng = random.Random(seed)
    if task == "arithmetic":
        return [arithmetic_problem(rng, "eval") for _ in range(n)]
    if task == "letters":
        if not words:
            raise ValueError("the letters task needs a word list")
        pools = split_words(words)
        return [letter_problem(rng, pools, "eval") for _ in range(n)]
    if task == "identity":
        return [identity_problem(rng) for _ in range(n)]
    raise ValueError(f"unknown task {task!r}; expected arithmetic, letters or identity")


def is_correct(problem: Problem, reply_text: str) -> bool:
    """Arithmetic and letters: the last number in the reply's text is the answer. Identity: the name is said."""
    if problem.task == "identity":
        return problem.answer.lower() in reply_text.lower()
    numbers = re.findall(r"-?\d+", reply_text)
    return bool(numbers) and numbers[-1] == problem.answer


def read_words(path: str) -> list[str]:
    """Lower-case alphabetic words of 3-12 letters from a word list (one per line, e.g. /usr/share/dict/words)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        words = {w.strip() for w in f}
    return sorted(w for w in words if re.fullmatch(r"[a-z]{3,12}", w))
