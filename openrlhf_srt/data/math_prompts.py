"""A deterministic, seeded set of math word problems with exact answers (docs/prompts.md).

Problem ``i`` of seed ``s`` depends only on ``(s, i)``: it is drawn from its own SplitMix64
stream (no ``random`` module state, no ``hash()``), so the same seed gives the same prompts on
any machine and Python version, and ``builtin_math_prompts(n)`` is a prefix of
``builtin_math_prompts(m)`` for ``n <= m``. Difficulty cycles 1, 2, 3, 4, 5 over the index.

All arithmetic is done with ``fractions.Fraction``; every answer is an integer or a
terminating decimal with at most two decimal places, written without trailing zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

INSTRUCTION = "Think step by step and put the final answer in \\boxed{}."
DIFFICULTIES = (1, 2, 3, 4, 5)
DEFAULT_N = 1024
DEFAULT_SEED = 0

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class _Rng:
    """SplitMix64: tiny, fully specified, identical everywhere."""

    def __init__(self, seed: int, index: int) -> None:
        self.state = _mix64((_mix64(seed & _MASK) + _GOLDEN * (index + 1)) & _MASK)

    def next64(self) -> int:
        self.state = (self.state + _GOLDEN) & _MASK
        return _mix64(self.state)

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi] (both inclusive)."""
        if hi < lo:
            raise ValueError(f"empty range [{lo}, {hi}]")
        return lo + self.next64() % (hi - lo + 1)

    def choice(self, seq):
        return seq[self.next64() % len(seq)]


# Names and plural nouns contain no digits: tests parse the numbers back out of the text.
_PEOPLE = (
    ("Tom", "he"), ("Mia", "she"), ("Ravi", "he"), ("Lena", "she"), ("Omar", "he"),
    ("Sofia", "she"), ("Ken", "he"), ("Ava", "she"), ("Diego", "he"), ("Nora", "she"),
    ("Ben", "he"), ("Priya", "she"), ("Leo", "he"), ("Emma", "she"), ("Sam", "he"),
    ("Hana", "she"), ("Max", "he"), ("Zoe", "she"), ("Ivan", "he"), ("Lucy", "she"),
)
_ITEMS = (
    "apples", "marbles", "stickers", "pencils", "cookies", "cards", "stamps", "shells",
    "balloons", "crayons", "oranges", "buttons", "coins", "beads", "candies",
)
_GOODS = (
    ("notebook", "notebooks"), ("sandwich", "sandwiches"), ("ticket", "tickets"),
    ("pen", "pens"), ("muffin", "muffins"), ("bottle of juice", "bottles of juice"),
    ("comic book", "comic books"), ("toy car", "toy cars"),
)


def _two_people(rng: _Rng) -> tuple[str, str, str]:
    name, pron = rng.choice(_PEOPLE)
    other = name
    while other == name:
        other, _ = rng.choice(_PEOPLE)
    return name, pron, other


def format_number(x: Fraction | int) -> str:
    """Exact decimal text of a terminating fraction: 12, 2.5, 0.75, -3 (no trailing zeros)."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    for places in range(1, 7):
        scaled = x * 10**places
        if scaled.denominator == 1:
            sign = "-" if scaled < 0 else ""
            digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
            return f"{sign}{digits[:-places]}.{digits[-places:]}"
    raise ValueError(f"{x} is not a short terminating decimal")


def _money(x: Fraction | int) -> str:
    """Price text: $3 or $2.50."""
    x = Fraction(x)
    if x.denominator == 1:
        return f"${x.numerator}"
    cents = x * 100
    if cents.denominator != 1:
        raise ValueError(f"{x} is not a whole number of cents")
    return f"${cents.numerator // 100}.{cents.numerator % 100:02d}"


def _price(rng: _Rng, lo_quarters: int, hi_quarters: int) -> Fraction:
    return Fraction(rng.randint(lo_quarters, hi_quarters) * 25, 100)


Problem = tuple[str, Fraction | int]


# ---- difficulty 1: one step, addition or subtraction --------------------------------------

def _add_more(r: _Rng) -> Problem:
    name, pron, _ = _two_people(r)
    it, a, b = r.choice(_ITEMS), r.randint(2, 40), r.randint(2, 30)
    return ((f"{name} has {a} {it}. {pron.capitalize()} buys {b} more {it}. "
             f"How many {it} does {name} have now?"), a + b)


def _give_away(r: _Rng) -> Problem:
    name, _, other = _two_people(r)
    it, a = r.choice(_ITEMS), r.randint(10, 60)
    b = r.randint(1, a - 1)
    return ((f"{name} has {a} {it} and gives {b} of them to {other}. "
             f"How many {it} does {name} have left?"), a - b)


def _pages(r: _Rng) -> Problem:
    name, _, _ = _two_people(r)
    a, b = r.randint(5, 60), r.randint(5, 60)
    return ((f"{name} read {a} pages on Monday and {b} pages on Tuesday. "
             f"How many pages did {name} read on the two days together?"), a + b)


def _taller(r: _Rng) -> Problem:
    name, _, other = _two_people(r)
    b, d = r.randint(100, 160), r.randint(2, 30)
    return ((f"{name} is {b + d} cm tall and {other} is {b} cm tall. "
             f"How many centimeters taller is {name} than {other}?"), d)


def _bus(r: _Rng) -> Problem:
    a = r.randint(10, 50)
    b = r.randint(2, a - 1)
    return ((f"A bus has {a} passengers. At the next stop {b} passengers get off and "
             f"nobody gets on. How many passengers are on the bus now?"), a - b)


# ---- difficulty 2: one multiplication/division, or two additive steps ---------------------

def _boxes(r: _Rng) -> Problem:
    it, a, b = r.choice(_ITEMS), r.randint(2, 12), r.randint(3, 15)
    return ((f"There are {a} boxes with {b} {it} in each box. "
             f"How many {it} are there altogether?"), a * b)


def _share(r: _Rng) -> Problem:
    name, _, _ = _two_people(r)
    it, q, k = r.choice(_ITEMS), r.randint(2, 15), r.randint(2, 9)
    return ((f"{name} shares {q * k} {it} equally among {k} friends. "
             f"How many {it} does each friend get?"), q)


def _cost_many(r: _Rng) -> Problem:
    one, many = r.choice(_GOODS)
    p, k = _price(r, 2, 40), r.randint(2, 9)
    return (f"One {one} costs {_money(p)}. How much do {k} {many} cost in dollars?", k * p)


def _buy_give(r: _Rng) -> Problem:
    name, _, other = _two_people(r)
    it, a, b = r.choice(_ITEMS), r.randint(5, 30), r.randint(2, 20)
    c = r.randint(1, a + b - 1)
    return ((f"{name} had {a} {it}, bought {b} more, and then gave {c} to {other}. "
             f"How many {it} does {name} have now?"), a + b - c)


def _garden(r: _Rng) -> Problem:
    rows, per = r.randint(2, 9), r.randint(3, 12)
    d = r.randint(2, rows * per - 1)
    return ((f"A garden has {rows} rows with {per} plants in each row. {d} of the plants "
             f"die. How many plants are left?"), rows * per - d)


# ---- difficulty 3: two steps (unit prices, percentages, ages, change) ---------------------

def _unit_price(r: _Rng) -> Problem:
    one, many = r.choice(_GOODS)
    unit, k = _price(r, 1, 20), r.randint(2, 6)
    m = r.randint(2, 10)
    while m == k:
        m = r.randint(2, 10)
    return ((f"{k} {many} cost {_money(k * unit)}. At the same price per {one}, "
             f"how much do {m} {many} cost in dollars?"), m * unit)


def _discount(r: _Rng) -> Problem:
    p = r.randint(2, 30) * 10
    pct = r.choice((10, 20, 25, 30, 40, 50, 75))
    return ((f"A jacket costs {_money(p)}. It is on sale for {pct}% off. "
             f"What is the sale price in dollars?"), Fraction(p * (100 - pct), 100))


def _percent_of(r: _Rng) -> Problem:
    pct = r.choice((10, 20, 25, 30, 40, 50, 60, 75, 80))
    step = 100 // _gcd(pct, 100)
    n = step * r.randint(max(1, 10 // step), 60 // step)
    return ((f"In a class of {n} students, {pct}% wear glasses. "
             f"How many students wear glasses?"), n * pct // 100)


def _ages_future(r: _Rng) -> Problem:
    name, _, other = _two_people(r)
    a, k, y = r.randint(3, 15), r.randint(2, 5), r.randint(2, 10)
    return ((f"{name} is {a} years old. {other} is {k} times as old as {name}. "
             f"How old will {other} be in {y} years?"), a * k + y)


def _change(r: _Rng) -> Problem:
    name, _, _ = _two_people(r)
    _, many = r.choice(_GOODS)
    p, k = _price(r, 2, 24), r.randint(2, 6)
    bill = next(b for b in (10, 20, 50, 100) if b > k * p)
    return ((f"{name} buys {k} {many} at {_money(p)} each and pays with a {_money(bill)} "
             f"bill. How much change does {name} get in dollars?"), bill - k * p)


# ---- difficulty 4: three steps, fractions, one-step-back equations ------------------------

def _fraction_left(r: _Rng) -> Problem:
    name, pron, other = _two_people(r)
    it = r.choice(_ITEMS)
    den = r.choice((2, 3, 4, 5, 6, 8))
    num = r.randint(1, den - 1)
    while _gcd(num, den) != 1:
        num = r.randint(1, den - 1)
    n = den * r.randint(2, 12)
    kept = n - n * num // den
    c = r.randint(1, kept - 1)
    return ((f"{name} has {n} {it}. {pron.capitalize()} gives {num}/{den} of them to "
             f"{other} and then loses {c}. How many {it} does {name} have left?"), kept - c)


def _think_number(r: _Rng) -> Problem:
    name, _, _ = _two_people(r)
    x, a, b = r.randint(2, 20), r.randint(2, 9), r.randint(1, 30)
    return ((f"{name} thinks of a number, multiplies it by {a} and then adds {b}. "
             f"The result is {a * x + b}. What number did {name} think of?"), x)


def _ages_sum(r: _Rng) -> Problem:
    name, _, other = _two_people(r)
    x, d = r.randint(5, 30), r.randint(1, 15)
    return ((f"The sum of {name}'s age and {other}'s age is {2 * x + d}. {other} is {d} "
             f"years older than {name}. How old is {name}?"), x)


def _shopping(r: _Rng) -> Problem:
    name, pron, _ = _two_people(r)
    a, p = r.randint(2, 6), _price(r, 2, 20)
    b, q = r.randint(2, 8), _price(r, 1, 8)
    total = a * p + b * q
    bill = next(x for x in (20, 50, 100) if x > total)
    return ((f"{name} buys {a} notebooks at {_money(p)} each and {b} pens at {_money(q)} "
             f"each. {pron.capitalize()} pays with a {_money(bill)} bill. "
             f"How much change does {name} get in dollars?"), bill - total)


def _tank(r: _Rng) -> Problem:
    den = r.choice((2, 3, 4, 5, 8, 10))
    num = r.randint(1, den - 1)
    v = den * r.randint(5, 40)
    return ((f"A water tank holds {v} liters. It is {num}/{den} full. "
             f"How many more liters are needed to fill it?"), v - v * num // den)


# ---- difficulty 5: harder three-step problems ---------------------------------------------

def _equation(r: _Rng) -> Problem:
    x, a = r.randint(1, 20), r.randint(3, 9)
    c, b = r.randint(1, a - 1), r.randint(0, 30)
    return f"Solve for x: {a}x + {b} = {c}x + {(a - c) * x + b}.", x


def _avg_speed(r: _Rng) -> Problem:
    while True:
        t1, t2 = r.randint(1, 4), r.randint(1, 4)
        v, w = 5 * r.randint(6, 24), 5 * r.randint(6, 24)
        avg = Fraction(v * t1 + w * t2, t1 + t2)
        if v != w and (avg * 100).denominator == 1:
            break
    return ((f"A train travels at {v} km/h for {t1} hours and then at {w} km/h for {t2} "
             f"hours. What is its average speed for the whole trip in km/h?"), avg)


def _up_down(r: _Rng) -> Problem:
    p = 100 * r.randint(1, 9)
    up, down = r.choice((10, 20, 25, 50)), r.choice((10, 20, 25, 50))
    return ((f"A bike costs {_money(p)}. Its price rises by {up}% and then the new price is "
             f"cut by {down}%. What is the final price in dollars?"),
            Fraction(p * (100 + up) * (100 - down), 10000))


def _ratio(r: _Rng) -> Problem:
    name, _, other = _two_people(r)
    a, b = r.randint(1, 7), r.randint(1, 7)
    while b == a:
        b = r.randint(1, 7)
    total = (a + b) * r.randint(2, 20)
    return ((f"{name} and {other} share {_money(total)} in the ratio {a}:{b}. "
             f"How many dollars does {other} get?"), total * b // (a + b))


def _missing_value(r: _Rng) -> Problem:
    k, m = r.randint(4, 5), r.randint(10, 50)
    while True:
        known = [r.randint(m - 10, m + 10) for _ in range(k - 1)]
        missing = k * m - sum(known)
        if missing > 0:
            break
    listed = ", ".join(str(v) for v in known[:-1]) + f" and {known[-1]}"
    return ((f"The average of {k} numbers is {m}. {k - 1} of them are {listed}. "
             f"What is the remaining number?"), missing)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


TEMPLATES: dict[int, tuple[Callable[[_Rng], Problem], ...]] = {
    1: (_add_more, _give_away, _pages, _taller, _bus),
    2: (_boxes, _share, _cost_many, _buy_give, _garden),
    3: (_unit_price, _discount, _percent_of, _ages_future, _change),
    4: (_fraction_left, _think_number, _ages_sum, _shopping, _tank),
    5: (_equation, _avg_speed, _up_down, _ratio, _missing_value),
}


def difficulty_of(index: int) -> int:
    """Difficulty of problem ``index``: 1, 2, 3, 4, 5, 1, 2, ..."""
    return DIFFICULTIES[index % len(DIFFICULTIES)]


def make_problem(index: int, seed: int = DEFAULT_SEED) -> dict:
    """Problem ``index`` of the set for ``seed`` (independent of how many are generated)."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = _Rng(seed, index)
    difficulty = difficulty_of(index)
    template = rng.choice(TEMPLATES[difficulty])
    text, answer = template(rng)
    return {
        "id": f"builtin-{seed}-{index:05d}",
        "prompt": f"{text} {INSTRUCTION}",
        "label": format_number(answer),
        "difficulty": difficulty,
        "template": template.__name__.lstrip("_"),
    }


def builtin_math_prompts(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> list[dict]:
    """``n`` math word problems for ``seed``: dicts with prompt, label, difficulty, id, template."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [make_problem(i, seed) for i in range(n)]
