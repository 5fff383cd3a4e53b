"""DeepSeek-R1-Distill's tokens, thoughts and answers (issue 27), with a tokenizer that behaves like the model's
(conftest.r1_tokenizer_dir: its real chat template and special-token settings on SmolLM2's vocabulary).

Training must see exactly the tokens generation sees: every training example's ids start with the generation
prompt's ids (one BOS, ``<｜Assistant｜><think>\\n`` at the end), as TRL itself tokenizes them. And a completion
starts inside the thought the prompt opened: until it writes ``</think>`` it has no answer, in every consumer.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import read_jsonl, run_looper, write_gsm8k

REPO = Path(__file__).resolve().parents[1]
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
FINISHED = "Okay, 48 in April and 24 in May.\n</think>\n\n48 + 24 = 72\n#### 72"
CUT_OFF = "Okay, 48 in April, 24 in May, so the answer is 72. Wait, let me re-check the"


def _config(tmp_path: Path, model_dir: Path, *extra: str):
    from looper.config import load_config

    return load_config(
        REPO / "configs" / "demo.yaml",
        [
            f"runs_dir={tmp_path}",
            f"model.name_or_path={model_dir}",
            "model.prompt_format=chat_user",
            "model.dtype=float32",
            *extra,
        ],
    )


def _generation_ids(tokenizer, config) -> list[int]:
    """The ids the engines generate from (``generate_stream`` encodes ``render_prompt``'s text)."""
    from looper.prompts import render_prompt

    return tokenizer(render_prompt(tokenizer, QUESTION, config.model.system_prompt, config.model.prompt_format))[
        "input_ids"
    ]


def test_the_generation_prompt_is_the_models_own_with_one_bos(r1_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    from looper.prompts import chat_messages, template_opens_thought

    tok = AutoTokenizer.from_pretrained(r1_tokenizer_dir)
    config = _config(tmp_path, r1_tokenizer_dir)
    ids = _generation_ids(tok, config)
    own = tok.apply_chat_template(
        chat_messages(QUESTION, config.model.system_prompt, in_user=True),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    assert ids == own
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert tok.decode(ids[-3:]) == "<｜Assistant｜><think>\n"
    assert template_opens_thought(tok, "chat_user") and not template_opens_thought(tok, "plain")


def _trl_sft_rows(model_dir: Path, examples: list[dict[str, str]], tmp_path: Path) -> list[dict]:
    """The examples as TRL's SFTTrainer tokenizes them (input_ids, labels: -100 where no loss)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(tmp_path / "sft-probe"),
        max_length=512,
        report_to="none",
        use_cpu=True,
        activation_checkpointing=False,
    )  # the name transformers >= 5.24 wants (no FutureWarning)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    return list(trainer.train_dataset)


def test_every_training_path_starts_with_the_generation_prompt(r1_tiny_model_dir, tmp_path):
    """SFT gold, SFT self data / rft, DPO and GRPO/RLOO: the prompt ids TRL trains on are the engines' prompt ids,
    the completion starts right after them and, for SFT, ends with one EOS."""
    from transformers import AutoTokenizer

    from looper.baseline_sft.train_sft import build_dataset, generated_example
    from looper.prompts import question_prompt
    from looper.rl_training.train_rl import dpo_dataset, online_dataset
    from looper.runs import RunDir

    tok = AutoTokenizer.from_pretrained(r1_tiny_model_dir)
    config = _config(tmp_path, r1_tiny_model_dir, "sft.data=gold", "rl.mix_arms=false")
    gen = _generation_ids(tok, config)
    run = RunDir.of(config)
    run.train.parent.mkdir(parents=True)
    run.train.write_text(json.dumps({"id": "q0", "question": QUESTION, "answer": SOLUTION, "gold": "72"}) + "\n")

    gold = build_dataset(config, run)[0]
    assert gold["completion"] == SOLUTION.rsplit("####", 1)[0].strip() + "\n</think>\n\n#### 72"  # the thought closes
    self_data = generated_example(tok, config, QUESTION, FINISHED)  # sft.data: self and rl.algorithm: rft
    for row in _trl_sft_rows(r1_tiny_model_dir, [gold, self_data], tmp_path):
        ids, labels = row["input_ids"], row["labels"]
        assert ids[: len(gen)] == gen and ids.count(tok.bos_token_id) == 1
        assert next(i for i, label in enumerate(labels) if label != -100) == len(
            gen
        )  # loss from the first generated token
        assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
        assert "</think>" in tok.decode(ids[len(gen) :])  # the reasoning is trained, not cut by the template

    prompt = question_prompt(QUESTION, config.model.system_prompt, config.model.prompt_format)  # as build-preferences
    run.preferences.write_text(
        json.dumps(
            {
                "prompt": prompt,
                "question": QUESTION,
                "better": FINISHED,
                "worse": "I think it is 70.\n</think>\n\n#### 70",
            }
        )
        + "\n"
    )
    pair = dpo_dataset(config, run)[0]
    assert tok(pair["prompt"])["input_ids"] == gen  # TRL's DPO encodes text prompts with tokenizer(text)

    rows = online_dataset(config, run, tok)
    assert tok(rows[0]["prompt"])["input_ids"] == gen  # GRPO / RLOO: text prompts, tokenizer(text) in TRL


def test_a_cut_off_thought_gives_no_answer_in_every_consumer(r1_tokenizer_dir, tmp_path):
    """The issue's case: an R1 answer cut off mid-thought scored 0.92 in Regime W and 0.96 as a GRPO reward against
    0.0 for a finished wrong answer. Now it has no answer: eval, Regime W, GRPO rewards, self data."""
    from transformers import AutoTokenizer

    from looper.eval.eval_gsm8k import score_record
    from looper.generation import GenResult
    from looper.regime_w.reward import ArmOutput, trajectory_rewards
    from looper.rl_training.train_rl import RegimeWRewards

    tok = AutoTokenizer.from_pretrained(r1_tokenizer_dir)
    config = _config(tmp_path, r1_tokenizer_dir, "regime_w.answer_mode=flexible")
    wrong = "48 + 12 = 60.\n</think>\n\n#### 60"
    cut = GenResult(0, CUT_OFF, 256, True)
    record = score_record({"id": "q0", "question": QUESTION, "gold": "72"}, [cut], thought_open=True)
    assert record["answer_flexible"] is None and not record["correct_flexible"] and not record["correct_strict"]

    outputs = [
        ArmOutput(f"a{i}", "compute" if i < 2 else "reflective", text, 50, text == CUT_OFF, thought_open=True)
        for i, text in enumerate([CUT_OFF, wrong, FINISHED, wrong])
    ]
    _, rewards = trajectory_rewards(outputs, "72", config.regime_w)
    assert rewards[0].answer is None and rewards[0].correct == 0.0 and rewards[0].missing
    assert rewards[0].reward < rewards[1].reward < rewards[2].reward  # cut off < finished wrong < finished right

    grpo = RegimeWRewards(config, 256, [tok.eos_token_id], thought_open=True)
    correct = grpo.functions()[0]
    got = correct(
        prompts=["p"] * 3,
        completions=[CUT_OFF, wrong, FINISHED],
        completion_ids=[[5] * 256, [5, 9], [5, 9]],
        id=["q0"] * 3,
        gold=["72"] * 3,
        arm=["sft"] * 3,
        family=["compute"] * 3,
    )
    assert got == [0.0, 0.0, 1.0]


def test_a_truncated_trajectory_is_never_chosen():
    from looper.config import PreferencesConfig
    from looper.regime_w.pairs import select_pairs

    prefs = PreferencesConfig(min_margin=0.0, require_correct_chosen=True, max_pairs_per_question=2)
    # the best reward is a truncated correct answer: the best finished correct one is chosen instead
    pairs, _ = select_pairs([1.0, 0.9, 0.1, 0.0], [True, True, False, False], prefs, [True, False, False, True])
    assert pairs and all(chosen != 0 for chosen, _ in pairs) and (1, 3) in pairs
    assert select_pairs([1.0, 0.0], [True, False], prefs, [True, False]) == (
        [],
        "no untruncated trajectory ranks above another",
    )
    assert select_pairs([1.0, 0.0], [True, False], prefs, [True, True]) == ([], "every trajectory truncated")


def test_pipeline_with_the_r1_template_end_to_end(r1_tiny_model_dir, tmp_path):
    """Every stage on the tiny model with the R1 template (chat_user, thoughts opened by the prompt): the rollouts
    record that the prompts opened a thought, and a random model's unfinished thoughts are not scored as answers."""
    data = write_gsm8k(tmp_path / "gsm8k", 12)
    a = [
        "configs/demo.yaml",
        f"runs_dir={tmp_path / 'runs'}",
        "data.source=local",
        f"data.path={data}",
        f"model.name_or_path={r1_tiny_model_dir}",
        "model.prompt_format=chat_user",
        "sft.trainer.max_steps=2",
        "sft.lora.r=4",
        "rollouts.num_questions=2",
        "rollouts.max_new_tokens=12",
        "preferences.min_margin=0.0",
        "preferences.require_correct_chosen=false",
        "rl.dpo.max_steps=1",
        "eval.limit=3",
        "eval.max_new_tokens=8",
        "eval.datasets=[gsm8k_test]",
    ]
    proc = run_looper("pipeline", *a, cwd=REPO)
    assert "pipeline done" in proc.stdout
    run = tmp_path / "runs" / "demo"
    trajectories = [t for r in read_jsonl(run / "data" / "rl_rollouts.jsonl") for t in r["trajectories"]]
    assert trajectories and all(t["thought_open"] for t in trajectories)
    assert all(t["answer"] is None for t in trajectories if "</think>" not in t["text"])
    for rec in read_jsonl(run / "eval" / "sft__gsm8k_test.jsonl"):
        if "</think>" not in rec["output"]:
            assert rec["answer_flexible"] is None and rec["answer_strict"] is None
