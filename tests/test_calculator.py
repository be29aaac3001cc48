"""The calculator tool: Python's arithmetic and str.count semantics, and nothing else."""

from __future__ import annotations

import random

import pytest

from nanochat_py import tools
from nanochat_py.tools import calculate


def python_result(expr: str) -> str | None:
    """What nanochat's eval-based calculator answers for arithmetic the test generated itself."""
    try:
        return str(eval(expr, {"__builtins__": {}}, {}))
    except ZeroDivisionError:
        return None


def random_expression(rng: random.Random, depth: int, top: bool = False) -> str:
    """Random ints and decimals joined by + - * / //, with unary signs, parentheses and spaces."""

    def space() -> str:
        return rng.choice(["", "", " ", "  "])

    if depth == 0 or (not top and rng.random() < 0.25):
        kind = rng.random()
        if kind < 0.1:
            atom = rng.choice(["0", "0", "0.0", ".0"])
        elif kind < 0.8:
            atom = str(rng.randint(1, 999))
        elif kind < 0.95:
            atom = f"{rng.randint(0, 99)}.{rng.randint(0, 99)}"
        else:
            atom = f".{rng.randint(1, 9)}"
    else:
        op = rng.choice(["+", "-", "*", "/", "//"])
        atom = random_expression(rng, depth - 1) + space() + op + space() + random_expression(rng, depth - 1)
    if rng.random() < 0.3:
        atom = "(" + space() + atom + space() + ")"
    if rng.random() < 0.2:
        atom = rng.choice(["-", "- ", "+", "--"]) + atom
    return atom


def random_expressions(n: int, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        expr = random_expression(rng, rng.randint(1, 5), top=True)
        if len(expr) <= tools.MAX_EXPRESSION_CHARS:
            out.append(expr)
    return out


def test_random_arithmetic_matches_python():
    exprs = random_expressions(600)
    results = [python_result(e) for e in exprs]
    # the sample must exercise every kind of result, or this test proves little
    assert sum(r is None for r in results) >= 20
    assert sum(r is not None and "." in r for r in results) >= 100
    assert sum(r is not None and "." not in r for r in results) >= 50
    for expr, want in zip(exprs, results, strict=True):
        assert calculate(expr) == want, expr


@pytest.mark.parametrize(
    "expr",
    ["7 // 2", "-7 // 2", "7.5 // 2", "1 / 3", "2 * -3", "- -3", "+3", "0.07 * 100", "00 + 1", "007.5", ".5 + 1."],
)
def test_edge_arithmetic_matches_python(expr):
    assert calculate(expr) == python_result(expr)


@pytest.mark.parametrize("expr", ["1 / 0", "5 // 0", "1 / 0.0", "3 // (2 - 2)", "0.0 / 0"])
def test_division_by_zero_gives_no_output(expr):
    assert calculate(expr) is None


def test_commas_in_numbers_are_dropped():
    assert calculate("1,234 + 1") == "1235"
    assert calculate("1,000,000 * 2") == "2000000"


@pytest.mark.parametrize(
    "expr",
    [
        "2**10",
        "2 ** 3",
        "abs(-1)",
        "x + 1",
        "(1).real",
        "int('3')",
        "lambda: 1",
        "(lambda x: x)(1)",
        "[i for i in range(3)]",
        "[1, 2]",
        "1 if 1 else 2",
        "1 < 2",
        "7 % 3",
        "~1",
        "1e5",
        "1_000",
        "007",
        "007 + 1",
        "'a' + 'b'",
        "",
        "   ",
        "1 +",
        "(1",
        "1)",
        "1 2",
        "(1)(2)",
    ],
)
def test_anything_but_plain_arithmetic_is_refused(expr):
    assert calculate(expr) is None


def test_code_execution_attempt_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    assert calculate(f"__import__('os').system('touch {marker}')") is None
    assert calculate(f"open('{marker}', 'w')") is None
    assert not marker.exists()


def test_over_long_input_is_refused():
    at_limit = "1" + "+1" * ((tools.MAX_EXPRESSION_CHARS - 1) // 2)
    at_limit += " " * (tools.MAX_EXPRESSION_CHARS - len(at_limit))
    assert len(at_limit) == tools.MAX_EXPRESSION_CHARS
    assert calculate(at_limit) == python_result(at_limit)
    too_long = at_limit + " "
    assert python_result(too_long) is not None
    assert calculate(too_long) is None


def test_nesting_deeper_than_the_limit_is_refused():
    def nested(depth: int) -> str:
        return "(" * depth + "7" + ")" * depth

    assert calculate(nested(tools.MAX_NESTING)) == "7"
    assert python_result(nested(tools.MAX_NESTING + 1)) == "7"
    assert calculate(nested(tools.MAX_NESTING + 1)) is None


def test_huge_results_are_refused():
    big = "9" * 80
    expr = f"{big}*{big}*{big}"
    assert len(expr) <= tools.MAX_EXPRESSION_CHARS
    assert len(python_result(expr)) == 240
    assert calculate(expr) is None
    medium = "9" * 75
    assert calculate(f"{medium} * {medium}") == python_result(f"{medium} * {medium}")


@pytest.mark.parametrize(
    "expr",
    [
        "9" * 200 + "*" + "9" * 55,
        "-" * 255 + "1",
        "(" * 128 + ")" * 128,
        "1/" * 127 + "1",
        "(" * 32 + "9" * 150 + "*" + "9" * 40 + ")" * 32,
        "99*" * 64,
    ],
    ids=["big-product", "unary-run", "paren-run", "division-chain", "deep-big-product", "dangling-op"],
)
def test_worst_case_inputs_return(expr):
    assert len(expr) <= tools.MAX_EXPRESSION_CHARS
    result = calculate(expr)
    assert result is None or result == python_result(expr)


@pytest.mark.parametrize("expr", ["١٢ + 1", "１２+1"], ids=["arabic-indic", "fullwidth"])
def test_non_ascii_digits_are_refused(expr):
    assert calculate(expr) is None


# --- string counting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        '"strawberry".count("r")',
        "'strawberry'.count('r')",
        '"aaaa".count("aa")',
        '"abc".count("")',
        '"".count("")',
        '"Mississippi".count("ss")',
        ' "a b a" . count ( "a" ) ',
        "\"it's\".count('\"')",
        "' Mississippi'.lower().count('m')",
        '"STRAWBERRY" . lower ( ) . count("r")',
        "'Mississippi'.count('m')",
    ],
)
def test_string_count_has_str_count_semantics(expr):
    assert calculate(expr) == str(eval(expr))


def test_strawberry_has_three_rs():
    assert calculate('"strawberry".count("r")') == "3"
    assert calculate('"aaaa".count("aa")') == "2"  # non-overlapping, like str.count


@pytest.mark.parametrize(
    "expr",
    [
        '"a".count("b") + "c".count("d")',
        '"abc".count("b", 1)',
        '"a".count(b)',
        '"a".upper()',
        '"A".upper().count("A")',
        '"a".lower()',
        '"a".lower().lower().count("a")',
        '"a".count("a").real',
        '"a".count("a") * 2',
        'len("abc")',
    ],
)
def test_other_string_expressions_are_refused(expr):
    assert calculate(expr) is None
