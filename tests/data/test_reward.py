"""The math reward: final-answer extraction, normalisation and comparison."""

from __future__ import annotations

from fractions import Fraction

import pytest

from openrlhf_srt.data.math_prompts import builtin_math_prompts
from openrlhf_srt.data.reward import (
    answers_match,
    extract_final_answer,
    math_reward,
    normalize_answer,
    parse_number,
)


@pytest.mark.parametrize("text, expected", [
    ("So the answer is \\boxed{12}.", "12"),
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("nested \\boxed{\\frac{\\sqrt{2}}{2}} done", "\\frac{\\sqrt{2}}{2}"),
    ("set \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not nest
    ("$\\boxed {  7 }$", "7"),
    ("\\fbox{9}", "9"),
    ("The answer is $\\boxed 42$.", "42"),
    ("truncated \\boxed{5} and then \\boxed{6", "5"),  # last *complete* box
    ("Put it in \\boxed{}. The sum is 3 + 4 = 7", "7"),  # an empty box is no answer
    ("The answer is 1,234.", "1,234"),
    ("We get 3.5 and finally 4.25 dollars", "4.25"),
    ("So x = -3", "-3"),
    ("ages 10-12", "12"),  # a hyphen between numbers is not a minus sign
    ("It is 3/4 of the cake.", "3/4"),
    ("Step 1: 5 apples. Step 2: 12 apples.", "12"),
    ("no digits here", None),
    ("", None),
    (None, None),
])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize("raw, norm", [
    ("$1,234", "1234"),
    ("\\$18.50", "18.50"),
    ("25\\%", "25"),
    ("\\text{12 apples}", "12"),
    ("\\frac{3}{4}", "3/4"),
    ("\\dfrac12", "1/2"),
    ("x = 5", "5"),
    ("90^\\circ", "90"),
    ("12 cm", "12"),
    ("30 km/h", "30"),
    ("2x", "2x"),  # a single letter is not a unit
    ("\\boxed{7}", "7"),
    (" 5. ", "5"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


@pytest.mark.parametrize("text, value", [
    ("12", Fraction(12)), ("12.0", Fraction(12)), ("-0.5", Fraction(-1, 2)), (".25", Fraction(1, 4)),
    ("3/4", Fraction(3, 4)), ("-3/4", Fraction(-3, 4)), ("(1)/(2)", Fraction(1, 2)),
    ("1,234.5", Fraction(24690, 20)), ("1/0", None), ("abc", None), ("1,2", None), ("", None),
    ("(\\sqrt{2})/(2)", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("response, label, reward", [
    ("Tom has 7 + 5 = 12 apples. \\boxed{12}", "12", 1.0),
    ("\\boxed{12}", "13", 0.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{0.50}", "1/2", 1.0),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", 1.0),
    ("The answer is 1,234.", "1234", 1.0),
    ("The answer is 1,234.", "1,234", 1.0),
    ("The change is $18.50.", "18.5", 1.0),
    ("\\boxed{\\$18.50}", "18.5", 1.0),
    ("\\boxed{25\\%}", "25", 1.0),
    ("\\boxed{12.0}", "12", 1.0),
    ("\\boxed{x = 4}", "4", 1.0),
    ("\\boxed{12 \\text{ apples}}", "12", 1.0),
    ("\\boxed{12} but wait, 13 is wrong", "12", 1.0),  # the box wins over later numbers
    ("I think 12. Then \\boxed{13}", "12", 0.0),
    ("12 then 13", "12", 0.0),  # the last number counts
    ("\\boxed{0.333}", "1/3", 0.0),  # an approximation is not the answer
    ("\\boxed{-3}", "3", 0.0),
    ("\\boxed{\\sqrt{2}}", "\\sqrt{2}", 1.0),  # non-numeric: normalised string equality
    ("\\boxed{\\sqrt{2}}", "\\sqrt{3}", 0.0),
    ("\\boxed{ (1, 2) }", "(1,2)", 1.0),
    ("\\boxed{}", "", 0.0),  # empty answers never match
    ("no answer", "5", 0.0),
    ("", "5", 0.0),
    (None, "5", 0.0),
    ("\\boxed{5}", None, 0.0),
    ("\\boxed{5}", 5, 1.0),  # numeric labels from JSON
    ("\\boxed{0.3}", 0.1 + 0.2, 1.0),  # float noise in a label is tolerated
    ("\\boxed{4.5}", 4.5, 1.0),
    ("\\boxed{1}", True, 0.0),  # a bool is not a label
])
def test_math_reward(response, label, reward):
    assert math_reward(response, label) == reward


def test_answers_match_is_symmetric_for_numbers():
    pairs = [("1/2", "0.5"), ("1,000", "1000"), ("$3", "3.00"), ("7%", "7"), ("2", "3")]
    for a, b in pairs:
        assert answers_match(a, b) == answers_match(b, a)


def test_builtin_labels_reward_their_own_answer():
    for p in builtin_math_prompts(1024):
        label = p["label"]
        assert math_reward(f"Working... so the answer is \\boxed{{{label}}}.", label) == 1.0
        assert math_reward(f"... which gives {label}", label) == 1.0
        wrong = str(Fraction(label) + 1)
        assert math_reward(f"\\boxed{{{wrong}}}", label) == 0.0
        # The echo of the instruction's empty box never counts as an answer.
        assert math_reward(p["prompt"] + " 1000000", label) == 0.0


def test_reward_of_money_labels_in_prose():
    labels = {p["label"] for p in builtin_math_prompts(1024) if "." in p["label"]}
    assert labels  # the set has decimal answers
    for label in labels:
        assert math_reward(f"The change is ${label}0.", label) == 1.0  # "$18.50." vs 18.5
