"""Regime W rewards: one per trajectory (for preference pairs and GRPO), and the plan's question-level one (docs/plan.md §3).

For trajectory i of a question (docs/regime_w.md)::

    r_i = R_c * c_i  +  R_a * s_wm * agree_i  -  L_i  -  P_miss * [a_i is None]  -  P_trunc * truncated_i

- ``c_i``: 1 if the answer equals gold (the shared checker), else 0. Without gold (label-free mode,
  as in test-time RL with majority votes) ``c_i = agree_i * s_wm``: the consensus, trusted as much
  as the arms agree, replaces correctness.
- ``agree_i``: 1 if the answer equals the consensus (modal) answer and is not bare (``scoring.shows_work``): a bare
  answer neither votes nor earns agreement, with or without gold.
- ``L_i = P_len * clip((tokens_i - free) / (cap - free), 0, 1)``.

``R_c > R_a + P_len + P_trunc`` is enforced, so with gold a correct trajectory always outranks an
incorrect one; among correct ones, agreeing with a confident consensus and being short rank higher.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from looper.answers import extract_answer, parse_number
from looper.config import ConfigError, RegimeWConfig
from looper.regime_w.arms import build_all_arms
from looper.regime_w.scoring import (  # ArmOutput and as_arm_outputs are re-exported: every stage imports them from here
    ArmOutput,
    as_arm_outputs,
    consensus_answer,
    intermediate_quantities,
    s_cf_for_question,
    s_end_for_question,
    s_path_for_question,
    s_wm_for_question,
    shows_work,
    votes,
)


@dataclass
class QuestionScores:
    consensus: str | None
    s_end: float
    s_path: float
    s_cf: float
    s_wm: float


@dataclass
class TrajectoryReward:
    reward: float
    correct: float  # c_i (1/0 with gold; agree * s_wm without)
    agree: bool
    length_penalty: float
    missing: bool
    truncated: bool
    answer: str | None

    def parts(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Vote:
    family: str
    answer: str | None


def check_reward_config(cfg: RegimeWConfig) -> None:
    """ConfigError (a ValueError) naming the fields when the Regime W settings break the reward's guarantees, or
    when its arm changes do not make a set of arms (``build_all_arms``)."""
    build_all_arms(cfg)
    if cfg.correct_reward <= cfg.consensus_weight + cfg.length_penalty + cfg.truncation_penalty:
        raise ConfigError(
            "regime_w: correct_reward must exceed consensus_weight + length_penalty + truncation_penalty, "
            f"else an incorrect trajectory can outrank a correct one ({cfg.correct_reward} <= "
            f"{cfg.consensus_weight} + {cfg.length_penalty} + {cfg.truncation_penalty})",
            fields=tuple(
                f"regime_w.{k}" for k in ("correct_reward", "consensus_weight", "length_penalty", "truncation_penalty")
            ),
        )
    if cfg.length_cap_tokens <= cfg.length_free_tokens:
        raise ConfigError(
            "regime_w: length_cap_tokens must be larger than length_free_tokens",
            fields=("regime_w.length_cap_tokens", "regime_w.length_free_tokens"),
        )
    if min(cfg.w_end, cfg.w_path, cfg.w_cf) < 0 or cfg.w_end + cfg.w_path + cfg.w_cf <= 0:
        raise ConfigError(
            f"regime_w: w_end, w_path and w_cf must be >= 0 with a positive sum, got {cfg.w_end}, "
            f"{cfg.w_path}, {cfg.w_cf}",
            fields=("regime_w.w_end", "regime_w.w_path", "regime_w.w_cf"),
        )


# The reward r_i above as separate parts (TRL's reward functions, each logged on its own) and their weights:
# sum_k weight_k * part_k = r_i, with part "consensus" = s_wm * agree_i and "correct" = c_i.
REWARD_PARTS = ("correct", "consensus", "length", "missing", "truncated")


def reward_part_weights(cfg: RegimeWConfig, penalize_truncation: bool = True) -> list[float]:
    """The weight of each of ``REWARD_PARTS``: R_c, R_a, -1 (the part is L_i itself), -P_miss, and -P_trunc (0 where
    truncated completions are masked out of the loss instead of penalised, ``rl.truncation: mask``)."""
    return [
        cfg.correct_reward,
        cfg.consensus_weight,
        -1.0,
        -cfg.missing_penalty,
        -cfg.truncation_penalty if penalize_truncation else 0.0,
    ]


def length_penalty(num_tokens: int, cfg: RegimeWConfig) -> float:
    span = cfg.length_cap_tokens - cfg.length_free_tokens
    return cfg.length_penalty * min(1.0, max(0.0, (num_tokens - cfg.length_free_tokens) / span))


def score_question(outputs: Sequence[ArmOutput], cfg: RegimeWConfig) -> QuestionScores:
    """Extract every answer (strict/flexible per config) and compute the question's agreement scores."""
    for o in outputs:
        o.answer = extract_answer(o.text, cfg.answer_mode, o.thought_open)
    answers = votes(outputs)  # bare answers do not vote (scoring's docstring)
    s_end = s_end_for_question(answers)
    s_path = s_path_for_question([], [intermediate_quantities(o.text) for o in outputs])
    s_cf = s_cf_for_question([_Vote(o.family, a) for o, a in zip(outputs, answers)])
    s_wm = s_wm_for_question(s_end, s_path, s_cf, cfg.w_end, cfg.w_path, cfg.w_cf)
    return QuestionScores(consensus_answer(answers, [o.family for o in outputs]), s_end, s_path, s_cf, s_wm)


def trajectory_rewards(
    outputs: Sequence[ArmOutput], gold: str | None, cfg: RegimeWConfig
) -> tuple[QuestionScores, list[TrajectoryReward]]:
    """Per-trajectory rewards with their parts, plus the question's scores. Deterministic."""
    check_reward_config(cfg)
    outputs = as_arm_outputs(outputs)
    scores = score_question(outputs, cfg)
    gold_value = parse_number(str(gold)) if gold is not None else None
    if gold is not None and gold_value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    rewards = []
    for o in outputs:
        agree = o.answer is not None and o.answer == scores.consensus and shows_work(o.text)
        if gold_value is not None:
            correct = float(o.answer is not None and parse_number(o.answer) == gold_value)
        else:
            correct = scores.s_wm if agree else 0.0
        missing = o.answer is None
        lp = length_penalty(o.num_tokens, cfg)
        reward = (
            cfg.correct_reward * correct
            + cfg.consensus_weight * scores.s_wm * agree
            - lp
            - cfg.missing_penalty * missing
            - cfg.truncation_penalty * o.truncated
        )
        rewards.append(TrajectoryReward(round(reward, 6), correct, agree, round(lp, 6), missing, o.truncated, o.answer))
    return scores, rewards


def compute_reward(
    question: str,
    arm_outputs: Sequence[ArmOutput] | Sequence[Mapping[str, Any]],
    gold_answer: str | None,
    cfg: RegimeWConfig | None = None,
) -> float:
    """The plan's question-level reward (docs/plan.md §3): the mean of the question's trajectory rewards. ``arm_outputs`` is
    looper's ArmOutputs or the plan's list of dicts (``as_arm_outputs``)."""
    del question  # the reward depends on the outputs and gold only; kept for the plan's signature
    if not arm_outputs:
        return 0.0
    _, rewards = trajectory_rewards(arm_outputs, gold_answer, cfg or RegimeWConfig())
    return sum(r.reward for r in rewards) / len(rewards)
