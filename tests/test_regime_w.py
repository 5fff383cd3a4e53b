"""Regime W: arms, the four scores (tables), reward orderings (randomised properties), demo, report."""

import json
import random
import time
from pathlib import Path

import pytest

from conftest import run_looper
from looper.config import ArmOverride, RegimeWConfig
from looper.regime_w.arms import build_all_arms
from looper.regime_w.report import build_report
from looper.regime_w.reward import ArmOutput, compute_reward, trajectory_rewards
from looper.regime_w.scoring import (
    consensus_answer,
    intermediate_quantities,
    s_cf_for_question,
    s_end_for_question,
    s_path_for_question,
    s_wm_for_question,
)

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- arms


def test_eight_arms_four_per_family_distinct():
    arms = build_all_arms()
    assert len(arms) == 8
    assert [a.family for a in arms].count("compute") == 4 and [a.family for a in arms].count("reflective") == 4
    assert len({a.system_prompt for a in arms}) == 8 and len({a.name for a in arms}) == 8
    temps = [a.temperature for a in arms]
    assert min(temps) <= 0.2 and max(temps) >= 1.0
    assert all("####" in a.system_prompt for a in arms)


def test_arm_overrides_and_selection():
    cfg = RegimeWConfig(
        arms=[
            ArmOverride(name="direct", temperature=0.0),
            ArmOverride(name="new", family="compute", system_prompt="p ####", temperature=0.5),
        ],
        only_arms=["direct", "new"],
    )
    arms = build_all_arms(cfg)
    assert [(a.name, a.temperature) for a in arms] == [("direct", 0.0), ("new", 0.5)]
    with pytest.raises(ValueError, match="unknown arm"):
        build_all_arms(RegimeWConfig(only_arms=["nope"]))
    with pytest.raises(ValueError, match="needs"):
        build_all_arms(RegimeWConfig(arms=[ArmOverride(name="half", temperature=0.3)]))


# ---------------------------------------------------------------- scores (tables)


@pytest.mark.parametrize(
    "answers,expected,why",
    [
        (["1", "1", "1", "1"], 1.0, "unanimous"),
        (["1", "1", "2", "3"], 0.5, "half on the mode"),
        (["1", None, None, None], 0.25, "missing answers count as disagreement"),
        ([None, None], 0.0, "all missing: no agreement"),
        (["7"], 1.0, "one arm agrees with itself"),
        (["1", "1", "2", "2"], 0.5, "a tie: the share is the same whichever mode"),
        ([], 0.0, "no outputs"),
    ],
)
def test_s_end(answers, expected, why):
    assert s_end_for_question(answers) == pytest.approx(expected), why


@pytest.mark.parametrize(
    "texts,expected,why",
    [
        (["48 / 2 = 24, 48 + 24 = 72", "48/2=24 then 48+24=72"], 1.0, "same route, different spacing"),
        (["<<48/2=24>>24 <<48+24=72>>72", "48 / 2 = 24 and 24 + 48 = 72"], 1.0, "calculator annotations are steps too"),
        (["48 / 2 = 24, 48 + 24 = 72", "1.5 * 48 = 72"], 0.5, "one shared quantity of two"),
        (["2 + 2 = 4", "3 * 3 = 9"], 0.0, "disjoint routes"),
        (["the answer is 72", "I think 72"], 0.0, "no shown work is no evidence of a shared route"),
        (["2 + 2 = 4"], 0.0, "one output: no pair"),
        (["1,000 + 600 = 1,600", "800 * 2 = 1600.0"], 1.0, "quantities compare as numbers"),
    ],
)
def test_s_path(texts, expected, why):
    assert s_path_for_question(texts) == pytest.approx(expected), why


def test_intermediate_quantities_ignores_plain_numbers():
    assert intermediate_quantities("There are 12 apples and 7 pears; 12 + 7 = 19.") == frozenset({"19"})
    assert intermediate_quantities("x = 5 and y = 7") == frozenset()  # assignments are not calculation steps
    assert intermediate_quantities("(3 + 4) * 2 = 14, then 14/7=2") == frozenset({"14", "2"})


def test_intermediate_quantities_is_linear_time_on_long_chains():
    """A long 'a * $b + c * $d ...' chain without '=' once backtracked for seconds (GSM8K train 5619)."""
    chain = " + ".join(f"{i} * ${i}0" for i in range(1, 400)) + " bills, or $1"
    t = time.perf_counter()
    intermediate_quantities(chain * 5)
    assert time.perf_counter() - t < 0.5


def _fa(pairs):
    return [type("O", (), {"family": f, "answer": a})() for f, a in pairs]


@pytest.mark.parametrize(
    "pairs,expected,why",
    [
        ([("compute", "1"), ("reflective", "1")], 1.0, "families agree"),
        ([("compute", "1"), ("compute", "1"), ("reflective", "2")], 0.0, "families disagree"),
        (
            [("compute", "1"), ("compute", "2"), ("reflective", "1"), ("reflective", "1")],
            0.5,
            "half the cross pairs agree",
        ),
        ([("compute", "1"), ("compute", "1")], 0.0, "one family only: robustness unmeasured"),
        ([("compute", None), ("reflective", None)], 0.0, "two missing answers do not agree"),
    ],
)
def test_s_cf(pairs, expected, why):
    assert s_cf_for_question(_fa(pairs)) == pytest.approx(expected), why


def test_s_wm_weights():
    assert s_wm_for_question(1.0, 0.0, 0.5, 1, 0, 1) == pytest.approx(0.75)
    assert s_wm_for_question(0.2, 0.4, 0.6, 1, 1, 1) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        s_wm_for_question(1, 1, 1, 0, 0, 0)


def test_consensus_tie_breaks():
    assert (
        consensus_answer(["1", "2", "2", "1"], ["compute", "compute", "reflective", "compute"]) == "2"
    )  # both families
    assert consensus_answer(["3", "4"]) == "3"  # earliest
    assert consensus_answer([None, None]) is None


# ---------------------------------------------------------------- reward properties


def _random_question(rng: random.Random, gold: str):
    outs = []
    for i in range(rng.randint(1, 10)):
        answer = rng.choice([gold, gold, str(int(gold) + 1), str(int(gold) + 2), None])
        steps = " ".join(
            f"{rng.randint(1, 9)} + {rng.randint(1, 9)} = {rng.randint(2, 18)}." for _ in range(rng.randint(0, 3))
        )
        text = steps + (f"\n#### {answer}" if answer is not None else " I am not sure.")
        outs.append(
            ArmOutput(
                f"arm{i}",
                rng.choice(["compute", "reflective"]),
                text,
                num_tokens=rng.randint(10, 3000),
                truncated=rng.random() < 0.2 and answer is None,
            )
        )
    return outs


def test_regime_w_reward_and_consensus_compare_answers_as_eval_does():
    """Issue 44 (Math-Verify #21): an answer a hair off the gold is wrong in eval, so it is wrong in the reward, and it is
    not the same answer as the gold in the consensus."""
    from looper.answers import is_correct

    cfg = RegimeWConfig()
    near = "48 + 24 = 72.00000000004\n#### 72.00000000004"
    outputs = [
        ArmOutput("direct", "compute", near),
        ArmOutput("solve-then-verify", "reflective", near),
        ArmOutput("equations", "compute", "48 + 24 = 72\n#### 72"),
    ]
    scores, rewards = trajectory_rewards(outputs, "72", cfg)
    assert [r.correct for r in rewards] == [float(is_correct(o.text, "72")) for o in outputs] == [0.0, 0.0, 1.0]
    assert scores.consensus == "72.00000000004" and scores.s_end == pytest.approx(2 / 3)
    assert [r.agree for r in rewards] == [True, True, False]


def test_correct_always_outranks_incorrect_randomised():
    rng = random.Random(0)
    cfg = RegimeWConfig()
    for _ in range(2000):
        outs = _random_question(rng, "42")
        _, rewards = trajectory_rewards(outs, "42", cfg)
        correct = [r.reward for r in rewards if r.correct == 1.0]
        wrong = [r.reward for r in rewards if r.correct != 1.0]
        if correct and wrong:
            assert min(correct) > max(wrong)


def test_among_correct_agreeing_and_concise_rank_higher():
    cfg = RegimeWConfig(length_free_tokens=100, length_cap_tokens=200)
    outs = [
        ArmOutput("a", "compute", "2 + 2 = 4\n#### 4", 50),
        ArmOutput("b", "reflective", "2 + 2 = 4\n#### 4", 50),
        ArmOutput("c", "compute", "2 + 2 = 4\n#### 4", 190),
        ArmOutput("d", "compute", "#### 5", 50),
        ArmOutput("e", "reflective", "#### 5", 50),
    ]
    # gold 4 is reached by 3 arms: consensus; a and b concise, c long
    _, r = trajectory_rewards(outs, "4", cfg)
    assert r[0].reward == r[1].reward > r[2].reward > r[3].reward
    # gold 5: the correct arms are in the minority, so they do not get the consensus bonus, yet still win
    _, r = trajectory_rewards(outs, "5", cfg)
    assert min(r[3].reward, r[4].reward) > max(r[0].reward, r[1].reward, r[2].reward)


def test_label_free_mode_uses_consensus():
    cfg = RegimeWConfig()
    outs = [
        ArmOutput("a", "compute", "2 + 2 = 4\n#### 4"),
        ArmOutput("b", "reflective", "2 * 2 = 4\n#### 4"),
        ArmOutput("c", "compute", "3 * 3 = 9\n#### 9"),
        ArmOutput("d", "reflective", "no idea"),
    ]
    scores, r = trajectory_rewards(outs, None, cfg)
    assert scores.consensus == "4"
    assert r[0].reward > r[2].reward > r[3].reward
    assert r[0].correct == pytest.approx(scores.s_wm)  # pseudo-correctness is the consensus confidence


def test_no_instruction_shows_a_rewardable_example_value():
    """Issue 44 (Visual-RFT #176): an instruction's format example is no answer, so a model that copies it is not correct."""
    from looper.answers import extract_answer
    from looper.config import PLAN_SYSTEM_PROMPT

    for prompt in [a.system_prompt for a in build_all_arms()] + [PLAN_SYSTEM_PROMPT]:
        assert "####" in prompt and extract_answer(prompt, "flexible") is None, prompt


def test_label_free_reward_is_not_won_by_copies_of_an_example():
    """Issue 44: every arm but one copies a format example as a bare answer; without gold, the one worked solution must
    rank first and the copies must earn no pseudo-correctness (they neither vote nor agree)."""
    cfg = RegimeWConfig()
    arms = build_all_arms()
    worked = "She sells 16 - 3 - 4 = 9 eggs for 9 * 2 = 18 dollars.\n#### 18"
    outs = [ArmOutput(a.name, a.family, worked if k == 5 else "#### 42") for k, a in enumerate(arms)]
    scores, r = trajectory_rewards(outs, None, cfg)
    assert scores.consensus == "18"
    assert max(range(len(r)), key=lambda i: r[i].reward) == 5
    assert all(x.correct == 0.0 and not x.agree for i, x in enumerate(r) if i != 5)
    # the instructions' own placeholder, copied by every arm, is no answer at all
    copies = [ArmOutput(a.name, a.family, "#### <number>") for a in arms]
    scores, r = trajectory_rewards(copies, None, cfg)
    assert scores.consensus is None and all(x.missing and x.correct == 0.0 for x in r)


def test_edge_cases_all_missing_one_arm_huge():
    cfg = RegimeWConfig()
    scores, r = trajectory_rewards([ArmOutput("a", "compute", "hmm"), ArmOutput("b", "reflective", "")], "3", cfg)
    assert scores.consensus is None and scores.s_wm == 0.0 and all(x.missing for x in r)
    scores, r = trajectory_rewards([ArmOutput("a", "compute", "1 + 2 = 3\n#### 3", 10)], "3", cfg)
    assert scores.s_end == 1.0 and r[0].correct == 1.0
    huge = "1 + 1 = 2. " * 20000 + "#### 2"
    t = time.perf_counter()
    _, r = trajectory_rewards(
        [ArmOutput("a", "compute", huge, 50000), ArmOutput("b", "compute", huge, 50000)], "2", cfg
    )
    assert time.perf_counter() - t < 5 and r[0].length_penalty == pytest.approx(cfg.length_penalty)
    assert compute_reward("q", [], "1") == 0.0


def test_reward_is_deterministic_and_config_is_checked():
    outs = _random_question(random.Random(3), "7")
    a = trajectory_rewards(outs, "7", RegimeWConfig())[1]
    b = trajectory_rewards(outs, "7", RegimeWConfig())[1]
    assert a == b
    with pytest.raises(ValueError, match="correct_reward must exceed"):
        trajectory_rewards(outs, "7", RegimeWConfig(consensus_weight=0.95))


# ---------------------------------------------------------------- demo and report


def test_demo_runs():
    proc = run_looper("regime-w", "demo", cwd=REPO)
    assert "s_wm=" in proc.stdout and "label-free" in proc.stdout and "critique-then-answer" in proc.stdout


def _fake_rollouts(path: Path, n: int = 30):
    rng = random.Random(1)
    with path.open("w") as f:
        for q in range(n):
            gold = str(10 + q)
            outs = _random_question(rng, gold)
            _, rewards = trajectory_rewards(outs, gold, RegimeWConfig())
            trajs = [
                {
                    "arm": o.arm,
                    "family": o.family,
                    "text": o.text,
                    "num_tokens": o.num_tokens,
                    "truncated": o.truncated,
                    "reward": r.reward,
                    "parts": r.parts(),
                }
                for o, r in zip(outs, rewards)
            ]
            f.write(json.dumps({"id": f"q{q}", "question": "?", "gold": gold, "trajectories": trajs}) + "\n")
    return path


def test_report_on_saved_rollouts(tmp_path):
    path = _fake_rollouts(tmp_path / "rl_rollouts.jsonl")
    proc = run_looper("regime-w", "report", str(path), "--out", str(tmp_path / "report.md"), cwd=REPO)
    text = (tmp_path / "report.md").read_text()
    for needle in ("## Per arm", "AUROC", "s_wm", "no s_cf", "pairs changed vs full"):
        assert needle in text and needle in proc.stdout


def test_report_ablation_rows_count_changed_pairs(tmp_path):
    records = [json.loads(x) for x in _fake_rollouts(tmp_path / "r.jsonl").read_text().splitlines()]
    rows = {
        line.split("  ")[0]: line.split()
        for line in build_report(records, RegimeWConfig()).splitlines()
        if line.startswith(("full ", "no length penalty "))
    }
    assert rows["full"][2] == "0"  # the full variant is the reference: nothing changes
    assert rows["full"][-1] != "n/a"
    # lengths are random in the fixture, so switching the length penalty off must move some pairs
    assert int(rows["no length penalty"][4]) > 0


def test_family_auroc_takes_the_consensus_within_one_family():
    """Compute arms agree on gold where reflective ones split: per family, the consensus and its AUROC differ."""
    from looper.regime_w.report import family_auroc

    def rec(gold, compute, reflective):
        trajs = [
            {"arm": f"c{i}", "family": "compute", "text": f"{a} * 1 = {a}\n#### {a}"} for i, a in enumerate(compute)
        ]
        trajs += [
            {"arm": f"r{i}", "family": "reflective", "text": f"{a} * 1 = {a}\n#### {a}"}
            for i, a in enumerate(reflective)
        ]
        return {"id": gold, "gold": gold, "trajectories": trajs}

    records = [
        rec("1", ["1", "1", "1", "2"], ["3", "4", "5", "1"]),  # compute: 3/4 agree on gold
        rec("2", ["7", "8", "9", "2"], ["2", "2", "2", "6"]),  # compute: no majority, wrong first answer
        rec("3", ["5", "5", "6", "6"], ["3", "3", "3", "3"]),
    ]  # compute: 2-2 tie on wrong answers
    compute = family_auroc(records, RegimeWConfig(), "compute")
    reflective = family_auroc(records, RegimeWConfig(), "reflective")
    assert (compute["questions"], compute["consensus_correct"]) == (3, 1)
    assert (reflective["questions"], reflective["consensus_correct"]) == (3, 2)
    assert compute["auroc_majority"] == 1.0  # the one correct compute consensus has the highest majority share
    assert family_auroc(records, RegimeWConfig(), None)["questions"] == 3
    assert compute["s_wm_minus_majority"] is None  # one correct consensus: no variance to estimate
    twice = family_auroc(records * 2, RegimeWConfig(), "reflective")  # 4 correct, 2 wrong
    assert twice["s_wm_minus_majority"]["difference"] == pytest.approx(twice["auroc_s_wm"] - twice["auroc_majority"])


def test_plan_shaped_arm_outputs_give_the_same_scores_and_reward():
    """compute_reward / s_cf_for_question take the plan's list of dicts (answer, reasoning, full_text; arm or
    family optional) as well as looper's ArmOutputs and rollout records, with the same result."""
    from looper.regime_w.arms import DEFAULT_ARMS
    from looper.regime_w.reward import compute_reward
    from looper.regime_w.scoring import s_cf_for_question

    answers = ["42", "42", "41", None, "42", "1,600", "42", "41"]
    reasonings = [f"step {i}: 6 * 7 = 42" for i in range(8)]
    looper = [
        ArmOutput(a.name, a.family, r + (f"\n#### {ans}" if ans else ""), 100 + 10 * i, i == 3)
        for i, (a, r, ans) in enumerate(zip(DEFAULT_ARMS, reasonings, answers))
    ]
    plan = [
        {"answer": ans, "reasoning": r, "full_text": o.text, "num_tokens": o.num_tokens, "truncated": o.truncated}
        for ans, r, o in zip(answers, reasonings, looper)
    ]  # in arm order, no arm / family given
    by_name = [{**p, "arm": o.arm} for p, o in zip(plan, looper)]
    records = [
        {"arm": o.arm, "family": o.family, "text": o.text, "num_tokens": o.num_tokens, "truncated": o.truncated}
        for o in looper
    ]
    no_text = [
        {
            "answer": p["answer"],
            "reasoning": p["reasoning"],
            "family": o.family,
            "num_tokens": o.num_tokens,
            "truncated": o.truncated,
        }
        for p, o in zip(plan, looper)
    ]
    expected = compute_reward("q", looper, "42")
    for shape in (plan, by_name, records, no_text):
        assert compute_reward("q", shape, "42") == pytest.approx(expected)
    _, _ = trajectory_rewards(looper, "42", RegimeWConfig())  # sets .answer on the ArmOutputs
    assert (
        s_cf_for_question(plan) == s_cf_for_question(by_name) == s_cf_for_question(records) == s_cf_for_question(looper)
    )
    assert s_cf_for_question(plan) > 0
    with pytest.raises(ValueError, match=r"arm_outputs\[0\].*family"):
        s_cf_for_question(plan[:5])
    with pytest.raises(ValueError, match="not a default arm"):
        compute_reward("q", [{**plan[0], "arm": "mystery"}], "42")
