"""looper's answer checker against Math-Verify (Hugging Face's math answer parser), on the inputs that decide
whether to adopt it (issue 27): signs, mixed numbers, LaTeX digit-group spacing, number lists, and every GSM8K gold.

    python -m venv /tmp/mv && /tmp/mv/bin/pip install math-verify==0.9.0
    PYTHONPATH=src /tmp/mv/bin/python bench/mathverify_compare.py --gsm8k <folder with train/test.jsonl> \\
        --out docs/bench/mathverify_vs_looper.json

For each tricky input: looper's flexible-mode answer (``looper.answers``, stdlib only) and Math-Verify's
``parse`` of the same text (its default extraction: LaTeX and plain expressions), as an exact number where it is
one. For every GSM8K gold (the text after ``####``): whether both read the same number. Math-Verify's parse
time per gold on this machine. Nothing here needs torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path
from typing import Any

from looper.answers import extract_answer, parse_gold

# (input, the number a grader should read; None: no answer). GSM8K's golds drop units and percent signs.
CASES = [
    (r"\boxed{-\frac{1}{2}}", "-0.5"),
    (r"\boxed{-\dfrac{3}{4}}", "-0.75"),
    ("#### - 1/2", "-0.5"),
    ("#### -3", "-3"),
    ("#### 3 1/2", "3.5"),
    (r"\boxed{3\frac{1}{2}}", "3.5"),
    (r"\boxed{-3\frac{1}{2}}", "-3.5"),
    (r"\boxed{1,\!600}", "1600"),
    (r"\boxed{1\,600}", "1600"),
    (r"\boxed{1{,}600}", "1600"),
    ("#### 1,600", "1600"),
    ("#### $1,600.00", "1600"),
    ("#### 12%", "12"),
    ("#### 45 dollars", "45"),
    (r"\boxed{45\text{ cm}}", "45"),
    ("#### 5 + 3 = 8", "8"),
    (r"\boxed{5+3=8}", "8"),
    ("#### 1 2 3 4 5", None),
    (r"\boxed{1 2 3 4 5}", None),
    ("#### 1,60", None),
    (r"\boxed{\sqrt{4}}", "2"),
    ("#### 3/4", "0.75"),
    (r"#### \frac{3}{4}", "0.75"),
]


def as_number(value: Any) -> str | None:
    """A sympy number as a canonical decimal string (as looper writes answers), else its text, else None."""
    import sympy

    if not isinstance(value, sympy.Basic):
        return None if value is None else str(value)
    if not value.is_number:  # an equation, a symbol: no number
        return str(value)
    exact = sympy.nsimplify(value)
    if exact.is_Rational:
        frac = Fraction(int(exact.p), int(exact.q))
    elif value.is_Float:
        frac = Fraction(str(value)).limit_denominator(10**9)
    else:
        return str(value)
    return str(frac.numerator) if frac.denominator == 1 else format(float(frac), ".10g")


def math_verify_answer(text: str) -> str | None:
    from math_verify import parse

    parsed = parse(text)
    return as_number(parsed[0]) if parsed else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gsm8k", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    cases = []
    for text, right in CASES:
        looper, mv = extract_answer(text, "flexible"), math_verify_answer(text)
        cases.append({"input": text, "right": right, "looper": looper, "math_verify": mv})
        print(f"{text!r:32} right {right!s:6} looper {looper!s:6} math-verify {mv}")

    disagree, seconds, n = [], [], 0
    for split in ("train", "test"):
        for line in (args.gsm8k / f"{split}.jsonl").open():
            solution = json.loads(line)["answer"]
            span = solution.rsplit("####", 1)[1].strip()
            started = time.perf_counter()
            mv = math_verify_answer(span)
            seconds.append(time.perf_counter() - started)
            n += 1
            if mv != parse_gold(solution):
                disagree.append({"split": split, "gold_line": span, "looper": parse_gold(solution), "math_verify": mv})
    result = {
        "math_verify": version("math-verify"),
        "date": time.strftime("%Y-%m-%d"),
        "cases": cases,
        "right": {who: sum(c[who] == c["right"] for c in cases) for who in ("looper", "math_verify")},
        "gsm8k_golds": n,
        "gsm8k_disagreements": disagree,
        "math_verify_parse_ms": {
            "median": round(1000 * statistics.median(seconds), 3),
            "p99": round(1000 * sorted(seconds)[int(0.99 * len(seconds))], 3),
        },
    }
    print(
        f"right on {len(cases)} inputs: {result['right']}; GSM8K golds {n}, disagreements {len(disagree)}; "
        f"Math-Verify parse {result['math_verify_parse_ms']} ms"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
