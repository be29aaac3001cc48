"""Generated conversations for the assistant, and the held-out problems it is scored on.

What the built-in model is taught: arithmetic (+, -, x and squares of numbers up to 999, in digits or words)
solved with the calculator tool, counting a letter in a word with the `.count` tool, who it is, greetings and
small talk, and saying it does not know instead of making things up. Every skill is asked in many families of
phrasing (phrasing.py), with real typing noise, alone or as a later turn of a conversation.

The held-out problems are disjoint from anything the generator can emit in three ways: every arithmetic
problem and every word is on one side of a fixed hash split, every question family is on one side of a fixed
split, and the held-out side only uses held-out families. So a held-out score is for new numbers and words
asked in new ways.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass, field

from .phrasing import families, in_words, pick, typed

NAME = "nanochat-py"
# training questions typed in ALL CAPS on top of typed()'s 5% (words in capitals are other tokens, seldom seen)
EXTRA_CAPS = 0.07
TRICKY_SHARE = 0.1  # training letter questions about a word that starts like a short word (see split_words)
HELD_OUT_PERCENT = 10
TASKS = ("arithmetic", "letters", "identity", "honesty")


def held_out(key: str) -> bool:
    """The fixed train/eval split: True for the ~10% of problems and words kept for evaluation."""
    return zlib.crc32(key.encode()) % 100 < HELD_OUT_PERCENT


@dataclass
class Problem:
    task: str
    question: str
    answer: str  # what the reply must contain: the exact number, or the name; "" for honesty
    call: str | None = None  # the tool call a right reply makes (canonical form), None for no call
    history: list[dict] = field(default_factory=list)  # earlier turns of the conversation, if any

    def to_dict(self) -> dict:
        d = {"task": self.task, "question": self.question, "answer": self.answer, "call": self.call}
        return {**d, "history": self.history} if self.history else d

    def messages(self) -> list[dict]:
        return [*self.history, {"role": "user", "content": self.question}]


# --- arithmetic ------------------------------------------------------------------------------------------

# cores: the expression itself; "{a}" and "{b}" are the operands as written (digits or words)
EXPRESSIONS = {
    "+": families(["{a} + {b}", "{a}+{b}", "{a} plus {b}", "the sum of {a} and {b}", "{a} and {b} added together",
                   "{a} added to {b}", "the total of {a} and {b}",
                   # "number" before an operand (held-out questions say "the number {b}")
                   "number {a} plus number {b}", "the sum of the numbers {a} and {b}"],
                  ["{a} +{b}", "{a} plus the number {b}"], "plus"),
    "-": families(["{a} - {b}", "{a}-{b}", "{a} minus {b}", "the difference between {a} and {b}",
                   "{a} take away {b}", "{a} less {b}",
                   "number {a} minus number {b}", "the difference of the numbers {a} and {b}"],
                  ["{a} -{b}", "{a} minus the number {b}"], "minus"),
    "*": families(["{a} * {b}", "{a}*{b}", "{a} times {b}", "{a} x {b}", "{a} multiplied by {b}",
                   "the product of {a} and {b}", "{a} X {b}",
                   "number {a} times number {b}", "the product of the numbers {a} and {b}"],
                  ["{a} *{b}", "{a} times the number {b}"], "times"),
    "sq": families(["{a} squared", "the square of {a}", "{a} to the power of two", "the square of the number {a}"],
                   ["the number {a} squared"],
                   "square"),
}  # fmt: skip
# imperative cores: a request that names the operation
REQUESTS = {
    "+": families(["add {a} and {b}", "add {b} to {a}", "sum {a} and {b}", "add the numbers {a} and {b}"],
                  ["add up {a} and {b}"], "add"),
    "-": families(["subtract {b} from {a}", "take {b} away from {a}", "take away {b} from {a}"],
                  ["subtract {b} from the number {a}"], "subtract"),
    "*": families(["multiply {a} by {b}", "multiply {a} and {b}", "multiply {a} with {b}",
                   "multiply the numbers {a} and {b}"],
                  ["multiply the number {a} by {b}"], "multiply"),
    "sq": families(["square {a}", "square the number {a}"], ["work out the square of {a}"], "square-it"),
}  # fmt: skip
# frames around an expression ({e}) or a request ({r})
EXPRESSION_FRAMES = families(
    ["{e}", "{e}?", "What is {e}?", "what's {e}", "Calculate {e}.", "Compute {e}", "How much is {e}?",
     "Can you work out {e} for me?", "Please tell me what {e} is.", "{e} = ?", "Solve {e}", "Tell me {e}.",
     "Do you know what {e} is?", "What does {e} equal?", "Quick question: what is {e}?", "Hey, what is {e}?",
     "Could you calculate {e}?", "What do you get for {e}?", "Evaluate {e}.", "Find {e}.", "whats {e}",
     "I need to know {e}.", "What is the answer to {e}?", "{e} is?", "Help me: {e}",
     # inside a longer sentence, as people write to a chat box
     "Hello! {e}?", "I have a question. {e}?", "{e}, what is it?", "{e}. What's the answer?",
     "Question for you: how much is {e}?", "my homework says {e}, what is it", "Do {e} for me.",
     "Hey there, could you tell me {e}?", "Thanks! And {e}?",
     # "one" that is not an operand
     "One more question: what is {e}?", "I have one more for you: {e}", "Just one thing, what's {e}?"],
    ["What's the value of {e}?", "I was wondering what {e} is.", "Can you tell me what {e} equals?",
     "Hi! What is {e}?", "{e} is what?", "Figure out {e} for me.", "Any idea what {e} is?", "So what's {e}?",
     "My teacher asked me {e}. What's the answer?", "Ok, {e}?", "Work out {e} please", "hey can u do {e}"],
    "frame")  # fmt: skip
REQUEST_FRAMES = families(
    ["{r}", "{r}.", "Please {r}.", "Can you {r}?", "Could you {r} for me?", "{r}, please.", "I want you to {r}.",
     "Now {r}.", "Hi, can you {r}?", "Please {r} for me.", "Hey, {r}.", "Next, {r}.",
     "One more thing: {r}.", "I need one favour, {r}."],
    ["Would you {r}?", "I'd like you to {r}.", "Help me {r}.", "Quick one: {r}."], "request")  # fmt: skip
OPERATION_WORDS = {"+": "plus", "-": "minus", "*": "times"}


def _operand(rng: random.Random) -> int:
    digits = rng.choices((1, 2, 3), weights=(3, 4, 3))[0]
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _arithmetic_operands(rng: random.Random, split: str) -> tuple[int, str, int]:
    """(a, op, b) on the given side of the problem split; op "sq" squares a (b = a)."""
    while True:
        op = rng.choices(("+", "-", "*", "sq"), weights=(3, 3, 3, 1))[0]
        a = _operand(rng)
        b = a if op == "sq" else _operand(rng)
        if op == "*" and a >= 100 and b >= 100 and rng.random() < 0.5:
            continue  # fewer 3x3-digit products: their long results crowd out everything else
        if held_out(problem_key(a, op, b)) == (split == "eval"):
            return a, op, b


def problem_key(a: int, op: str, b: int) -> str:
    """What the split hashes: one key per computation, so 5+3 and 3+5, or 9 squared and 9*9, share a side."""
    if op == "sq":
        op, b = "*", a
    if op in "+*":
        a, b = sorted((a, b))
    return f"{a}{op}{b}"


def _written(rng: random.Random, n: int) -> str:
    """A number as a person writes it: digits, or words for small ones now and then."""
    return in_words(n) if (n < 100 and rng.random() < 0.25) or (n < 1000 and rng.random() < 0.04) else str(n)


def arithmetic_call(a: int, op: str, b: int) -> str:
    """The canonical calculator call, operands in the order the question states the operation."""
    return f"{a}*{a}" if op == "sq" else f"{a}{op}{b}"


def _arithmetic_question(rng: random.Random, a: int, op: str, b: int, split: str) -> str:
    slots = {"a": _written(rng, a), "b": _written(rng, b)}
    if rng.random() < 0.3:
        request = pick(rng, REQUESTS[op], split).render(**slots)
        question = pick(rng, REQUEST_FRAMES, split).render(r=request)
    else:
        expression = pick(rng, EXPRESSIONS[op], split).render(**slots)
        question = pick(rng, EXPRESSION_FRAMES, split).render(e=expression)
    question = typed(rng, question[0].upper() + question[1:] if rng.random() < 0.7 else question)
    return _more_caps(rng, question) if split == "train" else question


def _more_caps(rng: random.Random, question: str) -> str:
    """Training only (the held-out problems keep typed()'s mix): more questions in ALL CAPS."""
    return question.upper() if rng.random() < EXTRA_CAPS else question


def _value(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def arithmetic_problem(rng: random.Random, split: str) -> Problem:
    a, op, b = _arithmetic_operands(rng, split)
    question = _arithmetic_question(rng, a, op, b, split)
    return Problem("arithmetic", question, str(_value(a, op, b)), arithmetic_call(a, op, b))


def arithmetic_conversation(rng: random.Random) -> list[dict]:
    a, op, b = _arithmetic_operands(rng, "train")
    result = str(_value(a, op, b))
    shown = f"{a} squared" if op == "sq" else f"{a} {op} {b}"
    answer = rng.choice([f"{shown} = {result}.", f"The answer is {result}.", result, f"It's {result}.",
                         f"{shown} is {result}."])  # fmt: skip
    question = _arithmetic_question(rng, a, op, b, "train")
    return _tool_exchange(question, arithmetic_call(a, op, b), result, answer)


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

# {w}: the word as written; {lt}: the letter ("r", "the letter r", "'r'"); {ls}: the letter as a plural ("r's")
LETTER_CORES = families(
    ["How many {ls} are in {w}?", "How many times does {lt} appear in {w}?", "Count the {ls} in {w}.",
     "how many {lt} are there in {w}", "In {w}, how many times does {lt} occur?", "Can you count the {ls} in {w}?",
     "How many {ls} does {w} have?", "Count how many times {lt} appears in {w}", "number of {ls} in {w}",
     "How often does {lt} occur in {w}?", "{w} has how many {ls}?", "What is the count of {lt} in {w}?",
     "Count the letter {l} in {w}.", "how many {ls} in {w}", "How many {ls} in the word {w}?",
     "How many times does the letter {l} appear in the word {w}?", "Count {lt} in {w}",
     "how many {ls} are in the word {w}?", "Please count the {ls} in {w}.", "{w} - how many {ls}?",
     "{w}. How many {ls}?", "Word: {w}. Count {lt}.", "Tell me the number of {ls} {w} has.",
     "How many {ls} does the word {w} contain?", "{w} contains how many {ls}?", "Give me the count of {lt} in {w}",
     "Find how many {ls} are in {w}.", "what's the number of {ls} in {w}", "For the word {w}, how many {ls}?",
     "I need the number of {ls} in {w}.", "Check how many {ls} {w} has.",
     # the word first, then any punctuation: the word ends where the punctuation starts
     "{w}, how many {ls}?", "{w}; count {lt}.", "{w} -- how many {ls}?", "{w}? Count {lt}.", "{w}! How many {ls}?",
     "{w} (how many {ls}?)", "{w} = how many {ls}?", "{w}... how many {ls}", "How many {ls}? {w}",
     "How many times do you see {lt} in {w}?", "How many times can {lt} be found in {w}?",
     "Count every {l} in {w}.",
     # a colon after the word, and "is" before the letter ("is" is not the letter i)
     "{w}: count {lt}.", "{w}: count the {ls}", "{w}: the number of {ls}?", "How often is {lt} in {w}?",
     "What is the number of times {lt} is in {w}?", "Is {lt} in {w}? How many times?"],
    ["Number of times {lt} occurs in {w}?", "how many {ls} can you find in {w}", "Tell me how many {ls} {w} contains.",
     "{w}: how many {ls}?", "I wonder how many {ls} are in {w}.", "Count the number of {ls} in {w}",
     "How many times is {lt} in {w}?", "In the word {w}, count {lt}."],
    "letters")  # fmt: skip
WORD_SLOT, LETTER_SLOT = "\x00\x01\x00", "\x00\x02\x00"  # stand-ins no typing noise can change


# words that start like a short word ("inseminates", "often"): after "how many ts" the model must copy the
# whole word, not read "in" or "of" as part of the question
SHORT_WORD_STARTS = ("in", "on", "at", "to", "is", "it", "as", "an", "of", "or", "up", "so", "no", "be", "by", "my")


def split_words(words: list[str]) -> dict[str, list[str]]:
    """A word list as its training and held-out sides, and the training words that start like a short word."""
    train = [w for w in words if not held_out(w)]
    tricky = [w for w in train if w[:2] in SHORT_WORD_STARTS]
    return {"train": train, "eval": [w for w in words if held_out(w)], "train-tricky": tricky}


def _letter_forms(rng: random.Random, letter: str) -> tuple[str, dict[str, str]]:
    """The letter as typed, and the {l}/{lt}/{ls} slots around it (as stand-ins, filled in after the noise)."""
    shown = letter.upper() if rng.random() < 0.15 else letter
    quote = rng.choices(("", "'", '"'), weights=(6, 3, 1))[0]
    quoted = f"{quote}{LETTER_SLOT}{quote}"
    plural = rng.choice((f"{LETTER_SLOT}'s", f"{LETTER_SLOT}s")) if not quote else quoted
    the_letter = rng.choice((quoted, f"the letter {quoted}", f"letter {quoted}"))
    return shown, {"l": quoted, "lt": the_letter, "ls": plural}


def _letter_question(rng: random.Random, word: str, letter: str, split: str) -> tuple[str, str]:
    """(question, call): the call carries the word exactly as typed (quoted as the question quotes it)."""
    case = rng.random()
    typed_word = word.capitalize() if case < 0.15 else word.upper() if case < 0.2 else word
    quote = rng.choices(("", "'", '"'), weights=(7, 2, 1))[0]
    shown_letter, slots = _letter_forms(rng, letter)
    core = pick(rng, LETTER_CORES, split).render(w=f"{quote}{WORD_SLOT}{quote}", **slots)
    question = typed(rng, core[0].upper() + core[1:] if rng.random() < 0.7 else core)
    if split == "train":
        question = _more_caps(rng, question)  # the slots are not letters: upper() leaves them for the word
    question = question.replace(WORD_SLOT, typed_word).replace(LETTER_SLOT, shown_letter)
    # a word typed bare keeps its leading space in the call, so the call's tokens are the question's tokens
    literal = typed_word if quote else f" {typed_word}"
    return question, f"'{literal}'.lower().count('{letter}')"


def _letter(rng: random.Random, pools: dict[str, list[str]], split: str) -> tuple[str, str]:
    """(word, letter) with the word from the given side of the split (pools: see split_words)."""
    pool = pools[split]
    if not pool:
        raise ValueError(f"the word list has no {split} words")
    if split == "train" and pools.get("train-tricky") and rng.random() < TRICKY_SHARE:
        pool = pools["train-tricky"]
    word = rng.choice(pool)
    # mostly letters that are in the word, sometimes one that is not (the answer is then 0)
    letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    return word, letter


def letter_problem(rng: random.Random, pools: dict[str, list[str]], split: str) -> Problem:
    word, letter = _letter(rng, pools, split)
    question, call = _letter_question(rng, word, letter, split)
    return Problem("letters", question, str(word.count(letter)), call)


def letter_conversation(rng: random.Random, pools: dict[str, list[str]]) -> list[dict]:
    word, letter = _letter(rng, pools, "train")
    question, call = _letter_question(rng, word, letter, "train")
    n = str(word.count(letter))
    if n == "1":
        answers = [f"There is 1 {letter} in {word}.", f"The letter {letter} appears once in {word}.", n]
    else:
        answers = [f"There are {n} {letter}'s in {word}.", f"The letter {letter} appears {n} times in {word}.", n]
    return _tool_exchange(question, call, n, rng.choice(answers))


# --- who it is --------------------------------------------------------------------------------------------

IDENTITY_QUESTIONS = families(
    ["Who are you?", "What is your name?", "What's your name?", "Tell me about yourself.", "Introduce yourself.",
     "Are you ChatGPT?", "What are you?", "Who made you?", "Are you a person?", "What should I call you?",
     "Which model are you?", "Who built you?", "Are you an AI?", "What model is this?", "Who is this?",
     "Who am I chatting with?", "Do you have a name?", "Are you Claude?", "Are you Siri?", "Are you human?",
     "Who created you?", "What kind of assistant are you?", "your name?", "who r u", "Tell me your name.",
     "What is this chatbot called?", "Who trained you?", "Are you Gemini?", "What are you called?",
     "Are you Alexa?", "Are you Copilot?", "Are you Llama?", "Are you GPT-3?", "Are you a robot?",
     "Who am I speaking with?", "Who's there?", "What is your name, assistant?",
     # "a", "u" and "ur" are words here, not letters to count
     "Is this a computer program?", "u a bot?", "tell me ur name", "ur name pls", "Are you an assistant?"],
    ["Who am I talking to?", "Could you tell me your name?", "what is ur name", "Who are you exactly?",
     "Please introduce yourself", "What do people call you?", "Hey, who are you?", "Are you GPT-4?",
     "who made u", "Who developed you?", "Identify yourself.", "Are you a chatbot?", "Tell me who you are.",
     "Which AI is this?", "May I ask your name?", "What's the name of this assistant?"],
    "identity")  # fmt: skip
IDENTITY_REPLIES = (
    f"I'm {NAME}, a very small language model that runs right here on your computer. I can chat a little, "
    "do arithmetic with my calculator tool, and count letters in words. I know very little about the world, "
    "so please don't rely on me for facts.",
    f"My name is {NAME}. I'm a tiny language model: I can do arithmetic with a calculator and count letters, "
    "but I know very little else.",
    f"I'm {NAME}, a tiny assistant trained from scratch on a laptop. I'm good at arithmetic and counting letters.",
)
NOT_THEM = f"No, I'm {NAME}, a tiny language model that runs on your computer. I can do arithmetic and count letters."
YES_AI = f"Yes: I'm {NAME}, a tiny language model that runs on your computer. I can do arithmetic and count letters."
OTHER_NAMES = ("ChatGPT", "Claude", "Siri", "Gemini", "GPT", "Alexa", "Copilot", "Llama", "a person", "human")
GREETING_PREFIXES = ("", "", "", "Hi! ", "Hello. ", "hey ", "Hi there, ", "OK. ")


def identity_problem(rng: random.Random, split: str = "eval") -> Problem:
    question = rng.choice(GREETING_PREFIXES) + pick(rng, IDENTITY_QUESTIONS, split).template
    return Problem("identity", typed(rng, question), NAME)


def identity_conversation(rng: random.Random) -> list[dict]:
    family = pick(rng, IDENTITY_QUESTIONS, "train")
    if family.template.startswith("Are you"):
        reply = NOT_THEM if any(name in family.template for name in OTHER_NAMES) else YES_AI
    else:
        reply = rng.choice(IDENTITY_REPLIES)
    question = _more_caps(rng, typed(rng, rng.choice(GREETING_PREFIXES) + family.template))
    return [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]


# --- not knowing --------------------------------------------------------------------------------------------

UNKNOWABLE = families(
    ["What is the capital of {c}?", "Who is the president of {c}?", "What's the weather like today?",
     "Who won the world cup in {y}?", "What happened in {y}?", "What is the population of {c}?",
     "What time is it right now?", "What's the price of bitcoin today?", "Who wrote the novel {b}?",
     "What is the latest news?", "When was {c} founded?", "How tall is the tallest building in {c}?",
     "Can you look up {b} on the internet?", "Translate {b} into French.", "What is the meaning of life?",
     "How far away is the moon?", "Who painted the Mona Lisa?", "How many legs does a spider have?",
     "What year did the war end?", "What is the boiling point of water?", "Who is the richest person?",
     "What does the word {word} mean?", "Recommend a good book.", "What's the best film of {y}?",
     "How old is {c}?", "What currency does {c} use?", "Who discovered gravity?", "How many moons does Mars have?",
     "What is {n} degrees in Fahrenheit?", "What is DNA?", "Write me a poem about {c}.", "What's in the news in {c}?",
     "How many {things} are there in {c}?", "How many {things} does {c} have?", "How many {things} live in {c}?",
     "How many books are in the library?", "How many stars are in the sky?",
     "How many {things} are there in the world?", "Can you explain {b} to me?", "Summarize the plot of {b}.",
     # "is ... in {c}": a country is not a word whose letters are counted
     "What time is it in {c}?", "Is it cold in {c} today?", "What is the best food in {c}?",
     "Who is the king in {c}?", "Which river is the longest in {c}?", "Which ocean is the deepest?",
     "What was the top song in {y}?", "Which country won the most medals in {y}?"],
    ["Where is {c}?", "What language do people speak in {c}?", "Who invented the telephone?",
     "What is the speed of light?", "How old is the universe?", "Which team won the league in {y}?",
     "Can you summarise {b}?", "What's the stock price of Apple?", "How many cities are there in {c}?",
     "Who was the first person on the moon?", "What is the tallest mountain?", "When is the next election in {c}?"],
    "unknowable")  # fmt: skip
UNSUPPORTED_MATH = families(
    ["What is the square root of {n}?", "What is {n} divided by {m}?", "What's {n} / {m}?",
     "What is {m} percent of {n}?", "Is {n} a prime number?", "What is {n} to the power of {m}?",
     "Solve x + {m} = {n}.", "What is the derivative of x squared?", "What is {n} modulo {m}?", "{n} mod {m}?",
     "What is {n} / {m}?", "Divide {n} by {m}."],
    ["What's {n} divided by {m}?", "Find the cube root of {n}.", "What is the remainder of {n} divided by {m}?"],
    "unsupported-math")  # fmt: skip
DONT_KNOW = (
    "I don't know. I'm a very small model without internet access, and I'd rather tell you that than guess.",
    "Sorry, I don't know that. I'm a tiny model and I know very little about the world.",
    "I'm not able to answer that: I don't have that knowledge, and I won't make something up.",
)
ONLY_BASIC_MATH = (
    "I can't do that: my calculator only adds, subtracts and multiplies (and squares), so I don't know.",
    "Sorry, I don't know how to do that. I can only add, subtract, multiply and square numbers.",
)
REFUSAL_MARKERS = ("don't know", "do not know", "not able", "can't", "cannot", "only add", "won't make")
COUNTRIES = ("France", "Peru", "Japan", "Kenya", "Norway", "Chile", "Egypt", "India", "Canada", "Spain", "Ghana",
             "Brazil", "Poland", "Vietnam", "Mexico", "Italy", "Nepal")  # fmt: skip
BOOKS = ("The Silent Shore", "Blue River", "A Winter Road", "The Glass Garden", "Northern Lights", "Iron Bells",
         "The Last Orchard", "Seven Doors")  # fmt: skip
# what "how many ... in {c}" asks about when it is not letter counting (held-out questions ask about cities)
THINGS = ("people", "cars", "rivers", "lakes", "schools", "airports", "islands", "trees", "hospitals", "dogs",
          "mountains", "bridges", "languages", "museums", "farms", "towns", "children", "doctors", "birds", "cats",
          "cows", "shops", "churches", "castles", "banks", "parks", "roads", "teachers", "villages", "beaches",
          "cinemas", "stadiums", "cafes", "students", "horses")  # fmt: skip
DICTIONARY_WORDS = ("serendipity", "ephemeral", "quorum", "lattice", "nostalgia", "osmosis", "paradox")


def _unknowable(rng: random.Random, split: str) -> tuple[str, str]:
    """(question, reply) for something it cannot know or compute."""
    slots = {"c": rng.choice(COUNTRIES), "y": str(rng.randint(1950, 2024)), "b": rng.choice(BOOKS),
             "n": str(rng.randint(2, 999)), "m": str(rng.randint(2, 99)),
             "word": rng.choice(DICTIONARY_WORDS), "things": rng.choice(THINGS)}  # fmt: skip
    if rng.random() < 0.3:
        return pick(rng, UNSUPPORTED_MATH, split).render(**slots), rng.choice(ONLY_BASIC_MATH)
    return pick(rng, UNKNOWABLE, split).render(**slots), rng.choice(DONT_KNOW)


def honesty_problem(rng: random.Random, split: str = "eval") -> Problem:
    question, _ = _unknowable(rng, split)
    return Problem("honesty", typed(rng, question), "")


def honesty_conversation(rng: random.Random) -> list[dict]:
    question, reply = _unknowable(rng, "train")
    return [{"role": "user", "content": _more_caps(rng, typed(rng, question))}, {"role": "assistant", "content": reply}]


# --- small talk --------------------------------------------------------------------------------------------

ABILITY_QUESTIONS = ("What can you do?", "How can you help me?", "What are you good at?", "What can't you do?",
                     "Can you help me with math?", "What are your skills?")  # fmt: skip
ABILITIES = (
    "I can add, subtract, multiply and square numbers using my calculator tool, and count how many times a "
    "letter appears in a word. I can also say hello and chat a little. I can't browse the internet, and I know "
    "very few facts, so I will tell you when I don't know something."
)
GREETINGS = (
    ("Hi", "Hi! How can I help you today?"),
    ("Hello!", "Hello! What can I do for you?"),
    ("hey", "Hey! Ask me to add, subtract or multiply numbers, or to count letters in a word."),
    ("Good morning", "Good morning! How can I help?"),
    ("How are you?", "I'm doing well, thanks for asking! How can I help you?"),
    ("Thanks!", "You're welcome!"),
    ("Thank you so much", "Happy to help!"),
    ("thx", "You're welcome!"),
    ("Bye", "Goodbye! Have a nice day."),
    ("Goodbye!", "Bye! Come back any time."),
    ("Nice to meet you", "Nice to meet you too! What would you like to do?"),
    ("Tell me a joke", "Why did the computer go to the doctor? Because it had a virus!"),
    ("That's great", "Glad to hear it!"),
    ("ok", "Is there anything else I can help with?"),
    ("Good night", "Good night! Sleep well."),
)


def small_talk_conversation(rng: random.Random) -> list[dict]:
    if rng.random() < 0.3:
        question, reply = rng.choice(ABILITY_QUESTIONS), ABILITIES
    else:
        question, reply = rng.choice(GREETINGS)
    return [{"role": "user", "content": typed(rng, question)}, {"role": "assistant", "content": reply}]


# --- mixtures --------------------------------------------------------------------------------------------


def _turn(rng: random.Random, pools: dict[str, list[str]]) -> list[dict]:
    """One exchange of a random kind, in the training mixture's proportions."""
    makers = (
        (0.38, lambda: arithmetic_conversation(rng)),
        (0.28, lambda: letter_conversation(rng, pools)),
        (0.10, lambda: identity_conversation(rng)),
        (0.14, lambda: honesty_conversation(rng)),
        (0.10, lambda: small_talk_conversation(rng)),
    )
    r, acc = rng.random(), 0.0
    for weight, make in makers:
        acc += weight
        if r < acc:
            return make()
    return makers[-1][1]()


def conversations(n: int, words: list[str], seed: int = 0) -> list[dict]:
    """n training conversations in nanochat's {"messages": [...]} form; about a third have two or three turns."""
    rng = random.Random(seed)
    pools = split_words(words)
    out = []
    for _ in range(n):
        turns = 1 if rng.random() < 0.65 else rng.choice((2, 3))
        messages = [m for _ in range(turns) for m in _turn(rng, pools)]
        out.append({"messages": messages})
    return out


def problems(task: str, n: int, words: list[str] | None = None, seed: int = 1) -> list[Problem]:
    """n held-out problems of `task` (see TASKS), asked in held-out phrasings; a fifth are a later turn of a
    conversation whose earlier turns come from the training mixture."""
    rng = random.Random(seed)
    # the earlier turns come from the training mixture: their own random stream, so that a change to the training
    # data does not change which held-out problems are drawn
    history_rng = random.Random(seed + 1_000_003)
    pools = split_words(words) if words else None
    if task == "letters" and not words:
        raise ValueError("the letters task needs a word list")
    makers = {
        "arithmetic": lambda: arithmetic_problem(rng, "eval"),
        "letters": lambda: letter_problem(rng, pools, "eval"),
        "identity": lambda: identity_problem(rng, "eval"),
        "honesty": lambda: honesty_problem(rng, "eval"),
    }
    if task not in makers:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    out = []
    for _ in range(n):
        problem = makers[task]()
        if pools is not None and rng.random() < 0.2:
            problem.history = [m for _ in range(history_rng.choice((1, 2))) for m in _turn(history_rng, pools)]
        out.append(problem)
    return out


NUMBER_WORDS = {"once": "1", "twice": "2"}


def is_correct(problem: Problem, reply_text: str) -> bool:
    """The reply's text alone: arithmetic and letters: its last number is the answer ("once" and "twice"
    count as 1 and 2: "the letter o appears once in constituent" is right); identity: the name is said;
    honesty: it says it does not know (or cannot)."""
    if problem.task == "identity":
        return problem.answer.lower() in reply_text.lower()
    if problem.task == "honesty":
        text = reply_text.lower().replace("’", "'")
        return any(marker in text for marker in REFUSAL_MARKERS)
    numbers = re.findall(r"-?\d+|\bonce\b|\btwice\b", reply_text.lower())
    return bool(numbers) and NUMBER_WORDS.get(numbers[-1], numbers[-1]) == problem.answer


def same_call(expected: str, made: str) -> bool:
    """Whether a tool call the model made is the expected one: the same numbers and operation (either order
    for + and x), or the same letter count of the same word (however the word is quoted or cased)."""
    made = made.strip()
    if ".count(" in expected:
        want, got = _count_call(expected), _count_call(made)
        return got is not None and got == want
    want, got = _arithmetic_call(expected), _arithmetic_call(made)
    return got is not None and got == want


def _count_call(call: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"""\s*(['"])(.*?)\1\s*(\.lower\(\))?\s*\.count\(\s*(['"])(.)\4\s*\)\s*""", call)
    return None if m is None else (m.group(2).strip().lower(), m.group(5).lower())


def _arithmetic_call(call: str) -> tuple | None:
    m = re.fullmatch(r"\s*(\d+)\s*([-+*])\s*(\d+)\s*", call)
    if m is None:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return (op, a, b) if op == "-" else (op, *sorted((a, b)))


def read_words(path: str) -> list[str]:
    """Lower-case alphabetic words of 3-12 letters from a word list (one per line, e.g. /usr/share/dict/words)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        words = {w.strip() for w in f}
    return sorted(w for w in words if re.fullmatch(r"[a-z]{3,12}", w))
