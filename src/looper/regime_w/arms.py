"""The eight Regime W arms: four compute-style and four reflective-style system prompts.

Each arm is a way of solving: a system prompt plus its own sampling temperature and top_p. The
compute family calculates forward; the reflective family checks, re-derives or critiques. Their
agreement (and disagreement across families) is what Regime W scores. Every arm asks for the final
answer as ``#### <number>`` so that the one answer checker reads them all; the format is shown with a placeholder, never
a value, since a model that copies an example value ('#### 42') would otherwise be rewarded whenever the gold or the
consensus happens to be that value (Visual-RFT #176).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from looper.config import ArmOverride, ConfigError, RegimeWConfig

FINAL = "End with the final answer on its own line in the format '#### <number>' (the number only)."


@dataclass(frozen=True)
class ArmSpec:
    name: str
    family: Literal["compute", "reflective"]
    system_prompt: str
    temperature: float
    top_p: float = 1.0


DEFAULT_ARMS = [
    ArmSpec(
        "direct",
        "compute",
        f"You are a careful math tutor. Solve the problem step by step, computing each quantity directly. {FINAL}",
        0.2,
        1.0,
    ),
    ArmSpec(
        "equations",
        "compute",
        f"You solve math word problems with algebra. Name the unknowns, write the equations, then solve them. {FINAL}",
        0.4,
        0.95,
    ),
    ArmSpec(
        "bookkeeping",
        "compute",
        f"You solve math word problems by bookkeeping: list every quantity in the problem with its value, "
        f"update the list after each step, then read off the result. {FINAL}",
        0.6,
        0.95,
    ),
    ArmSpec(
        "estimate-then-exact",
        "compute",
        f"First estimate the answer roughly, then compute it exactly step by step and make sure the exact "
        f"answer is close to the estimate. {FINAL}",
        0.8,
        0.9,
    ),
    ArmSpec(
        "solve-then-verify",
        "reflective",
        f"Solve the problem step by step, then verify the answer by substituting it back into the problem. "
        f"Fix any mistake you find. {FINAL}",
        0.3,
        1.0,
    ),
    ArmSpec(
        "alternative-method",
        "reflective",
        f"Solve the problem in two different ways and compare the results; if they differ, find the error. {FINAL}",
        0.5,
        0.95,
    ),
    ArmSpec(
        "units-and-edge-cases",
        "reflective",
        f"Solve the problem step by step while tracking the units of every quantity, and check edge cases "
        f"such as remainders, rounding and what exactly the question asks for. {FINAL}",
        0.7,
        0.95,
    ),
    ArmSpec(
        "critique-then-answer",
        "reflective",
        f"Write a first solution, critique it as a strict teacher would, then write the corrected final "
        f"solution. {FINAL}",
        1.0,
        0.9,
    ),
]


def _apply(arm: ArmSpec | None, override: ArmOverride) -> ArmSpec:
    changes = {k: v for k, v in dataclasses.asdict(override).items() if v is not None and k != "name"}
    if arm is None:
        missing = [k for k in ("family", "system_prompt", "temperature") if k not in changes]
        if missing:
            raise ConfigError(f"regime_w.arms: new arm {override.name!r} needs {missing}", fields=("regime_w.arms",))
        return ArmSpec(name=override.name, **changes)
    return dataclasses.replace(arm, **changes)


def build_all_arms(config: RegimeWConfig | None = None) -> list[ArmSpec]:
    """The eight default arms with the run config's changes applied (by name) and selection made.

    Raises:
        ConfigError: an entry of ``regime_w.arms`` without a name, a new arm without family / system_prompt /
            temperature, or a name in ``regime_w.only_arms`` that no arm has.
    """
    arms = {arm.name: arm for arm in DEFAULT_ARMS}
    for override in config.arms if config else []:
        if not override.name:
            raise ConfigError("regime_w.arms: every entry needs a name", fields=("regime_w.arms",))
        arms[override.name] = _apply(arms.get(override.name), override)
    if config and config.only_arms is not None:
        unknown = [n for n in config.only_arms if n not in arms]
        if unknown:
            raise ConfigError(
                f"regime_w.only_arms: unknown arm(s) {unknown}; known: {sorted(arms)}", fields=("regime_w.only_arms",)
            )
        return [arms[n] for n in config.only_arms]
    return list(arms.values())


def family_of(arm: str | None, family: str | None, index: int, count: int) -> str:
    """The family of one arm output given in the plan's shape (docs/plan.md §3): its ``family``, else its ``arm``'s (a default
    arm's name), else, for the plan's list of exactly eight outputs in arm order, the default arm at its place
    (four compute, then four reflective)."""
    if family in ("compute", "reflective"):
        return family
    if family is not None:
        raise ValueError(f"arm_outputs[{index}]: family {family!r} is not 'compute' or 'reflective'")
    by_name = {a.name: a.family for a in DEFAULT_ARMS}
    if arm is not None:
        if arm not in by_name:
            raise ValueError(
                f"arm_outputs[{index}]: arm {arm!r} is not a default arm ({', '.join(by_name)}); give its family"
            )
        return by_name[arm]
    if count == len(DEFAULT_ARMS):
        return DEFAULT_ARMS[index].family
    raise ValueError(
        f"arm_outputs[{index}]: no 'family' or 'arm', and {count} outputs are not the eight default arms "
        "in order; say each output's family"
    )
