"""A verifiable reward for math answers: 1.0 when the final answer equals the label.

The final answer of a response is the content of its last complete ``\\boxed{...}`` (nested
braces allowed; ``\\fbox`` too), or, when there is none, the last number in the text. Both
sides are normalised (``$``, thousands commas, ``%``, ``\\text{}``, ``\\frac{a}{b}``, ``x =``,
trailing units, ...) and compared exactly as numbers (``fractions.Fraction``, so 0.5 == 1/2
== \\frac{1}{2} and 12 == 12.0) when both parse as numbers, else as normalised strings.
The rule is written out in docs/prompts.md.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")

# A number as it appears in prose: thousands commas, decimals, a simple fraction a/b.
# A minus sign counts only when it does not follow a word character ("5-3" is not -3).
_NUMBER_RE = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:/\d+)?"
)
_PLAIN_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_FRACTION_RE = re.compile(r"^([+-]?)\(?([+-]?[\d.]+)\)?/\(?([+-]?[\d.]+)\)?$")
_UNIT_SUFFIX_RE = re.compile(r"^([+-]?[\d.,/]*\d)((?!pi$)[a-z]{2,}(?:/[a-z]+)?(?:\^\d)?)$")
_VARIABLE_PREFIX_RE = re.compile(r"^[a-z]\s*=\s*(?=\S)")
_WRAPPERS = ("\\text", "\\textbf", "\\mathrm", "\\mathbf", "\\mbox", "\\textrm", "\\operatorname")


def _matching_brace(text: str, open_at: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_at``, or None if it never closes."""
    depth = 0
    i = open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            i += 2  # an escaped brace does not nest
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last complete, non-empty \\boxed{...} (or \\boxed 5, \\fbox{...})."""
    starts = sorted(
        (m.start(), len(cmd)) for cmd in _BOX_COMMANDS for m in re.finditer(re.escape(cmd), text)
    )
    for start, length in reversed(starts):
        i = start + length
        if i < len(text) and text[i].isalpha():
            continue  # \boxedfoo is another command
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _matching_brace(text, i)
            if end is not None and text[i + 1 : end].strip():
                return text[i + 1 : end]
        elif i > start + length:  # "\boxed 42": one token after a space
            m = re.match(r"[^\s$]+", text[i:])
            if m:
                return m.group(0)
    return None


def extract_final_answer(text: str | None) -> str | None:
    """The last \\boxed{} content, else the last number in ``text``, else None."""
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def _unwrap_commands(s: str, commands: tuple[str, ...]) -> str:
    """Replace ``\\cmd{X}`` by ``X`` for each command (nesting allowed)."""
    for cmd in commands:
        while True:
            at = s.find(cmd + "{")
            if at < 0:
                break
            end = _matching_brace(s, at + len(cmd))
            if end is None:
                break
            s = s[:at] + s[at + len(cmd) + 1 : end] + s[end + 1 :]
    return s


def _replace_fracs(s: str) -> str:
    """``\\frac{a}{b}`` -> ``(a)/(b)``, ``\\frac12`` -> ``1/2`` (also \\dfrac, \\tfrac)."""
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    while True:
        at = s.find("\\frac")
        if at < 0:
            return s
        i = at + len("\\frac")
        parts = []
        for _ in range(2):
            while i < len(s) and s[i] == " ":
                i += 1
            if i < len(s) and s[i] == "{":
                end = _matching_brace(s, i)
                if end is None:
                    return s
                parts.append(s[i + 1 : end])
                i = end + 1
            elif i < len(s):
                parts.append(s[i])
                i += 1
            else:
                return s
        num, den = (p if _PLAIN_NUMBER_RE.match(p.strip()) else f"({p})" for p in parts)
        s = f"{s[:at]}{num}/{den}{s[i:]}"


def normalize_answer(answer: str) -> str:
    """Canonical text of an answer: no $, %, spaces, LaTeX wrappers, thousands commas."""
    s = str(answer).strip()
    boxed = _last_boxed(s)
    if boxed is not None and s.startswith(_BOX_COMMANDS):
        s = boxed
    s = _unwrap_commands(s, _WRAPPERS)
    s = _replace_fracs(s)
    for junk in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "^{\\circ}", "^\\circ",
                 "\\circ", "°", "\\$", "$", "\\%", "%"):
        s = s.replace(junk, "")
    s = s.strip().rstrip(".").strip().lower()
    s = _VARIABLE_PREFIX_RE.sub("", s)
    s = re.sub(r"\s+", "", s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    m = _UNIT_SUFFIX_RE.match(s)
    if m and parse_number(m.group(1)) is not None:
        s = m.group(1).replace(",", "") if _THOUSANDS_RE.match(m.group(1)) else m.group(1)
    return s


def parse_number(s: str) -> Fraction | None:
    """Exact value of an integer, decimal or ``a/b`` string (already normalised), or None."""
    s = s.strip()
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if s.startswith("(") and s.endswith(")") and s.count("(") == 1:
        s = s[1:-1]
    try:
        if _PLAIN_NUMBER_RE.match(s):
            return Fraction(s)
        m = _FRACTION_RE.match(s)
        if m:
            sign, num, den = m.groups()
            if not (_PLAIN_NUMBER_RE.match(num) and _PLAIN_NUMBER_RE.match(den)):
                return None
            value = Fraction(num) / Fraction(den)
            return -value if sign == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def answers_match(predicted: str, label: str, rel_tol: float = 1e-9) -> bool:
    """Whether two answers are the same number (exactly, up to float noise) or string."""
    a, b = normalize_answer(predicted), normalize_answer(label)
    x, y = parse_number(a), parse_number(b)
    if x is not None and y is not None:
        return x == y or abs(x - y) <= rel_tol * max(1, abs(y))
    return a == b and a != ""


def math_reward(response_text: str | None, label) -> float:
    """1.0 if the response's final answer equals ``label``, else 0.0."""
    if label is None or isinstance(label, bool):
        return 0.0
    predicted = extract_final_answer(response_text)
    if predicted is None:
        return 0.0
    return 1.0 if answers_match(predicted, str(label)) else 0.0
