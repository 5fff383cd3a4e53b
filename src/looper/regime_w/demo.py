"""Regime W on one hard-coded question with hand-written arm outputs: every score and reward, as a table.

    python -m looper.regime_w.demo        (or: looper regime-w demo)

The outputs cover the cases the reward must order: correct and agreeing, correct by another route,
a wrong answer, a missing answer, a rambling correct answer, and a truncated one.
"""

from __future__ import annotations

from looper.config import RegimeWConfig
from looper.regime_w.reward import ArmOutput, compute_reward, trajectory_rewards
from looper.tables import text_table

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
GOLD = "72"
RAMBLE = "Let me think about clips. " * 60

OUTPUTS = [
    ArmOutput("direct", "compute", "In May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 72 clips.\n#### 72", 30),
    ArmOutput("equations", "compute", "Let m = 48 / 2 = 24. Total t = 48 + m = 72.\n#### 72", 28),
    ArmOutput("bookkeeping", "compute", "April: 48. May: 48 * 0.5 = 24. Sum: 72.\n#### 72", 26),
    ArmOutput("estimate-then-exact", "compute", "About 70. Exactly: 48 + 48 = 96.\n#### 96", 22),
    ArmOutput(
        "solve-then-verify",
        "reflective",
        "May: 48 / 2 = 24. Total: 48 + 24 = 72. Check: 72 - 48 = 24, half of 48.\n#### 72",
        40,
    ),
    ArmOutput("alternative-method", "reflective", "1.5 * 48 = 72, and 48 + 24 = 72 agree.", 20),
    ArmOutput(
        "units-and-edge-cases", "reflective", RAMBLE + "May: 48 / 2 = 24 clips. 48 + 24 = 72 clips.\n#### 72", 400
    ),
    ArmOutput("critique-then-answer", "reflective", "First attempt: 48 + 24 = 72. Critique: the", 256, truncated=True),
]


def main() -> None:
    cfg = RegimeWConfig(length_free_tokens=64, length_cap_tokens=256)
    print(f"Question: {QUESTION}\nGold: {GOLD}\n")
    for label, gold in (("with gold", GOLD), ("label-free (consensus replaces gold)", None)):
        scores, rewards = trajectory_rewards(OUTPUTS, gold, cfg)
        rows = [
            [
                o.arm,
                o.family,
                r.answer or "-",
                f"{r.correct:.2f}",
                "yes" if r.agree else "no",
                f"{r.length_penalty:.3f}",
                "yes" if r.missing else "",
                "yes" if r.truncated else "",
                f"{r.reward:+.3f}",
            ]
            for o, r in zip(OUTPUTS, rewards)
        ]
        print(f"== {label}")
        print(
            text_table(
                rows, ["arm", "family", "answer", "correct", "agree", "len_pen", "missing", "truncated", "reward"]
            )
        )
        print(
            f"consensus={scores.consensus}  s_end={scores.s_end:.3f}  s_path={scores.s_path:.3f}  "
            f"s_cf={scores.s_cf:.3f}  s_wm={scores.s_wm:.3f}  "
            f"question reward={compute_reward(QUESTION, OUTPUTS, gold, cfg):+.3f}\n"
        )


if __name__ == "__main__":
    main()
