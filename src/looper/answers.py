"""The one answer checker: SFT data, the Regime W reward and evaluation all call these functions.

Modes
-----
- ``strict``: only a ``#### <number>`` line counts (GSM8K's own convention; the last such line wins).
- ``flexible``: ``#### <number>``, else the last ``\\boxed{...}``, else a final "the answer is ..." sentence.

Before either, thoughts are removed: everything up to the last ``</think>`` (closed blocks, and the
block R1 chat templates open in the prompt), then everything after an unclosed ``<think>`` (a
reasoning model cut off mid-thought). ``thought_open=True`` says the prompt ended inside a thought (R1's
generation prompt ends ``<think>\n``): the output then starts in that thought, and one without ``</think>``
(cut off by the token limit before it finished thinking) has no answer. There is deliberately no "last number anywhere" fallback: it
credits outputs that merely list numbers, which invites reward hacking and inflates evaluation.

Numbers compare as exact rationals: ``1,600`` = ``1600`` = ``1600.0`` = ``$1,600.00``; ``3/4`` = ``0.75``. The canonical
string of an answer (``extract_answer``) is exact too, so two answers are the same string exactly when they are the same
number: Regime W groups answers by that string (consensus, s_end, s_cf) and so agrees with eval's comparison; rounding
(``72.00000000004`` read as ``72``) would credit in training what eval marks wrong (Math-Verify #21).

The answer after ``####`` may sit in a ``\\boxed{}`` (``#### \\boxed{72}``) or carry its arithmetic in a trailing
parenthesis (``#### 72 (48 + 24)``), as math-tuned models write it (lm-eval #1204, verl #2150); the parenthesis counts
only when its arithmetic equals the number, so ``#### 12 (13)`` or ``#### 12 (or 13)`` stays a hedge with no answer.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

__all__ = ["strip_thinking", "parse_number", "extract_answer", "is_correct", "parse_gold", "MODES"]

MODES = ("strict", "flexible")

_HASH_LINE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]*)",
    re.IGNORECASE,
)
# A number: optional sign, digits with optional thousands commas, optional decimals, or a leading-dot decimal.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
# LaTeX's thin / negative / medium spaces and {,} between digit groups: 1\,600, 1,\!600, 1{,}600
_DIGIT_GROUP_SPACE = re.compile(r"(?<=\d)(,?)(?:\\[,!;: ]|\{,\})+(?=\d{3}(?!\d))")
# A sign set apart from its number: "- 1/2", "- \frac{1}{2}"
_LOOSE_SIGN = re.compile(r"(?<![\w.)}])([-+])\s+(?=\d|\.\d|\\[dt]?frac)")
# [sign] [whole part] \frac{a}{b}: -\frac{1}{2}, 3\frac{1}{2} (a mixed number), \dfrac{3}{4}
_LATEX_FRAC = re.compile(r"([-+]?)(\d+)?\s*\\[dt]?frac\{\s*([^{}]+?)\s*\}\{\s*([^{}]+?)\s*\}")
_TEXT_MACRO = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}")
_CURRENCY_PERCENT = re.compile(r"\\?[$%]")
# Macros that only format; any other command left in a span (\sqrt, \pi, \times, ...) means it is not one plain number
_FORMATTING = re.compile(
    r"\\(?:left|right|displaystyle|textstyle|quad|qquad|mathbf|boldsymbol|bf|mathit)(?![a-zA-Z])"
    r"|\^\s*\{?\\circ\}?|\\[,!;: ]|[{}]"
)
# [sign] a/b, or a mixed number [sign] w a/b
_SIMPLE_FRAC = re.compile(r"^\s*([-+]?)(?:(\d+)\s+)?(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")


def strip_thinking(text: str, thought_open: bool = False) -> str:
    """Remove reasoning-model thoughts so that only the visible answer is checked.

    Everything up to the last ``</think>`` goes (closed blocks, and a block the chat template opened
    in the prompt); then an unclosed ``<think>`` cuts the rest (a model stopped mid-thought). Two
    linear scans: this runs on policy outputs, which an adversarial policy controls. ``thought_open``: the
    text continues a thought the prompt opened, as if it began with ``<think>``.
    """
    if thought_open:
        text = "<think>" + text
    lower = text.lower()
    close = lower.rfind("</think>")
    if close >= 0:
        text, lower = text[close + len("</think>") :], lower[close + len("</think>") :]
    opened = lower.find("<think>")
    return text if opened < 0 else text[:opened]


def _to_fraction(token: str) -> Fraction | None:
    token = token.replace(",", "").lstrip("+")
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def _signed(sign: str, whole: str | None, num: Fraction | None, den: Fraction | None) -> Fraction | None:
    """sign x (whole + num / den); a whole part makes a mixed number, whose fraction must be proper (3 1/2)."""
    if num is None or not den:
        return None
    value = num / den
    if whole is not None:
        if not 0 <= value < 1:  # "2 3/2" or "2\frac{x}{y}" is not a mixed number: ambiguous
            return None
        value += int(whole)
    return -value if sign == "-" else value


def parse_number(text: str) -> Fraction | None:
    """Parse a short answer span into an exact number, or None if it is not exactly one number.

    Accepts currency symbols, percent signs, units and trailing periods around a single number
    (``$1,600.00.``, ``45 dollars``, ``12%``), LaTeX ``\\frac{a}{b}`` and plain ``a/b`` with their sign
    (``-\\frac{1}{2}``, ``- 1/2``), mixed numbers (``3 1/2``, ``3\\frac{1}{2}``: 3.5) and LaTeX digit-group
    spacing (``1\\,600``, ``1,\\!600``, ``1{,}600``). A span with an ``=`` is read after its last ``=``
    (``5 + 3 = 8`` is 8). A span holding two or more numbers, or a LaTeX command that does more than format
    (``\\sqrt{4}``, ``2\\pi``), is not one plain number and gives None.
    """
    span = text.strip().replace("−", "-")  # the Unicode minus sign
    if "=" in span:
        span = span.rsplit("=", 1)[1]
    span = _DIGIT_GROUP_SPACE.sub(",", span)
    span = _TEXT_MACRO.sub(" ", span)  # \text{dollars}
    span = _CURRENCY_PERCENT.sub(" ", span)
    span = _LOOSE_SIGN.sub(r"\1", span)
    frac = _LATEX_FRAC.search(span)
    if frac:
        rest = _LATEX_FRAC.sub(" ", span, count=1)
        if _LATEX_FRAC.search(rest) or _NUMBER.search(rest) or re.search(r"\\[a-zA-Z]", _FORMATTING.sub(" ", rest)):
            return None
        sign, whole, num, den = frac.groups()
        return _signed(sign, whole, _to_fraction(num), _to_fraction(den))
    span = _FORMATTING.sub(" ", span)
    if "\\" in span:
        return None
    simple = _SIMPLE_FRAC.match(span.replace(",", ""))
    if simple:
        sign, whole, num, den = simple.groups()
        return _signed(sign, whole, _to_fraction(num), _to_fraction(den))
    numbers = _NUMBER.findall(span)
    if len(numbers) != 1:
        return None
    return _to_fraction(numbers[0])


def _format(value: Fraction) -> str:
    """Canonical, exact string for a number: ``72``, ``-0.5``, ``72.00000000004``; a rational without a finite decimal
    as ``a/b`` (``1/3``). Equal strings exactly when equal numbers, and ``parse_number`` reads it back unchanged."""
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}".rstrip("0")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), with nested braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


# a span that is one box and nothing else but $ and a period: "\boxed{72}", "$\boxed{72}$."
_WHOLE_BOX = re.compile(r"^\s*\$*\s*\\(?:boxed|fbox)\{(.*)\}\s*\$*\s*\.?\s*$")
_TRAILING_PAREN = re.compile(r"^(?P<answer>[^()]*?)\s*\((?P<work>[^()]*)\)\s*\.?\s*$")
_ARITHMETIC = re.compile(r"^[\d\s.,+\-*/x×÷()]+$")


def _arithmetic_value(expression: str) -> Fraction | None:
    """The exact value of ``expression`` when it is plain arithmetic on numbers (+ - * / and x, ×, ÷ as times and
    divided by; brackets), else None. Numbers are read as exact fractions, never floats."""
    if len(expression) > 200 or not _ARITHMETIC.match(expression):
        return None
    expression = expression.replace("×", "*").replace("÷", "/").replace("x", "*")
    expression = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", expression)
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return None

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(ast.get_source_segment(expression, node))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            left, right = value(node.left), value(node.right)
            ops = {ast.Add: left.__add__, ast.Sub: left.__sub__, ast.Mult: left.__mul__, ast.Div: left.__truediv__}
            return ops[type(node.op)](right)
        raise ValueError("not plain arithmetic")

    try:
        return value(tree.body)
    except (ValueError, ZeroDivisionError):
        return None


def _hash_answer(span: str) -> Fraction | None:
    """The number of a ``####`` line's span: the span itself (``parse_number``), the content of a ``\\boxed{}`` that
    is the whole span, or the number before a trailing parenthesis whose arithmetic equals it (``72 (48 + 24)``)."""
    box = _WHOLE_BOX.match(span)
    if box:  # two boxes leave a "\boxed" inside the content, which parse_number refuses
        return parse_number(box[1])
    value = parse_number(span)
    if value is not None:
        return value
    paren = _TRAILING_PAREN.match(span)
    if paren:
        answer, work = parse_number(paren["answer"]), _arithmetic_value(paren["work"])
        if answer is not None and answer == work:
            return answer
    return None


def _extract_value(text: str, mode: str, thought_open: bool = False) -> Fraction | None:
    if mode not in MODES:
        raise ValueError(f"unknown answer mode {mode!r}; expected one of {MODES}")
    text = strip_thinking(text, thought_open)
    hashes = _HASH_LINE.findall(text)
    if hashes:
        # The last #### line is the answer; an unparseable one is not rescued by other rules,
        # so that "#### N" followed by garbage is a wrong answer, not a second chance.
        return _hash_answer(hashes[-1])
    if mode == "strict":
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        return parse_number(boxed)
    sentences = _ANSWER_IS.findall(text)
    if sentences:
        # Only the start of the sentence counts: "the answer is 18 because 3 + 15 = 18" -> 18.
        span = re.split(r"(?<=\d)\.(?!\d)|\s(?:because|since|as|so)\s|[;(]", sentences[-1], maxsplit=1)[0]
        return parse_number(span)
    return None


def extract_answer(text: str, mode: str = "strict", thought_open: bool = False) -> str | None:
    """The final answer in ``text`` as a canonical number string (``"1600"``, ``"0.75"``), or None.
    ``thought_open``: the prompt left a thought open (see the module docstring)."""
    value = _extract_value(text, mode, thought_open)
    return None if value is None else _format(value)


def _gold_value(gold: str | int | float | Fraction) -> Fraction | None:
    if isinstance(gold, Fraction):
        return gold
    if isinstance(gold, (int, float)):
        return Fraction(gold).limit_denominator(10**9) if isinstance(gold, float) else Fraction(gold)
    return parse_number(str(gold))


def is_correct(text: str, gold: str | int | float, mode: str = "strict", thought_open: bool = False) -> bool:
    """True when the final answer in ``text`` equals ``gold`` as a number."""
    predicted = _extract_value(text, mode, thought_open)
    expected = _gold_value(gold)
    return predicted is not None and expected is not None and predicted == expected


def answers_equal(a: str | None, b: str | None) -> bool:
    """Compare two extracted answers (canonical strings or None) as numbers; None never equals."""
    if a is None or b is None:
        return False
    va, vb = parse_number(a), parse_number(b)
    return va is not None and va == vb


def parse_gold(solution: str) -> str | None:
    """The gold number of a GSM8K-style solution (its ``#### N`` line), canonical, or None."""
    return extract_answer(solution, mode="strict")
