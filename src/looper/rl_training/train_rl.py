"""train-rl: DPO on Regime W preference pairs, or online GRPO / RLOO with Regime W as the reward.

    looper train-rl configs/demo.yaml                       (rl.algorithm: dpo)
    looper train-rl configs/demo.yaml rl.algorithm=grpo     (online, Regime W reward in the loop)
    python -m looper.rl_training.train_rl configs/demo.yaml rl.algorithm=rloo

The policy is the base model (same quantization options as SFT) with the SFT adapter loaded
trainable; training continues that adapter, so ``checkpoints/lora_rl`` holds SFT + RL and loads on
the base model alone. With a full SFT checkpoint (``sft.method: full``) the policy is that
checkpoint plus a fresh LoRA adapter.

DPO reference (``rl.reference``): ``adapter`` (default) loads the base once; TRL copies the SFT
adapter into a frozen "ref" adapter and computes reference log-probabilities through it.
``two_models`` is the plan's layout: a second base + SFT adapter, frozen.

GRPO / RLOO: each Regime W part is its own TRL reward function (correctness or label-free
consensus, consensus agreement x s_wm, length, missing answer, truncation) with the Regime W weights,
so TRL sums them into exactly the Regime W reward and logs every part. With ``rl.mix_arms`` the
training rows are (question, arm) pairs in question order and one generation batch holds every arm
of one question, so the reward is scored over the whole multi-arm group (s_end, s_path and s_cf
across compute and reflective prompts) while TRL normalises advantages per prompt as usual.
Completions cut at ``max_completion_length`` are penalised by Regime W (``rl.truncation: penalize``)
or masked out of the loss (``mask``, TRL's ``mask_truncated_completions``).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from looper.config import RunConfig
from looper.modeling import load_stage_model, load_tokenizer, lora_config
from looper.prompts import preference_prompt
from looper.regime_w.arms import build_all_arms
from looper.regime_w.reward import ArmOutput, check_reward_config, trajectory_rewards
from looper.runs import (
    InputError,
    RunDir,
    check_stage,
    finish_stage,
    read_jsonl,
    require_input,
    set_seed,
    stage_hash,
    start_stage,
)
from looper.trainers import check_output_free, make_trl_config, metrics_callback, prepare_work_dir, save_atomically

STAGE = "train-rl"


# ----------------------------------------------------------------------------- policy


def load_policy(config: RunConfig, run: RunDir) -> Any:
    """Base + SFT adapter, trainable (adapter name "default"), or full SFT checkpoint + a fresh LoRA."""
    if config.sft.method == "full":
        from peft import get_peft_model

        model = load_stage_model(config, run, "sft")
        return get_peft_model(model, lora_config(config.sft.lora_preset, config.sft.lora, model))
    if not (run.lora_sft / "adapter_config.json").is_file():
        raise InputError(f"{run.lora_sft}: no SFT adapter; run `looper sft` first")
    return load_stage_model(config, run, "sft", trainable_adapter=True)


def load_reference(config: RunConfig, run: RunDir) -> Any:
    """The plan's two-model layout: a second, frozen copy of base + SFT, the adapter merged in (TRL
    patches its fused log-prob head onto a plain model, not a PEFT wrapper)."""
    model = load_stage_model(config, run, "sft")
    return model if config.sft.method == "full" else model.merge_and_unload()


# ----------------------------------------------------------------------------- DPO


def dpo_dataset(config: RunConfig, run: RunDir) -> Any:
    from datasets import Dataset

    rows = read_jsonl(require_input(run.preferences, "build-preferences"), required=("prompt", "chosen", "rejected"))
    if not rows:
        raise InputError(f"{run.preferences}: empty; no pairs to train on")
    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])


def prepare_dpo(config: RunConfig, run: RunDir) -> tuple[type, dict[str, Any]]:
    """TRL's DPOTrainer and its arguments: pairs, config, tokenizer, policy (and the two-model reference)."""
    from trl import DPOTrainer

    dataset = dpo_dataset(config, run)
    args = make_trl_config("dpo", config, run.work_dir(STAGE))
    tokenizer = load_tokenizer(config.model)
    policy = load_policy(config, run)
    ref = load_reference(config, run) if config.rl.reference == "two_models" else None
    return DPOTrainer, {"model": policy, "ref_model": ref, "args": args, "train_dataset": dataset, "processing_class": tokenizer}


# ----------------------------------------------------------------------------- GRPO / RLOO


def online_dataset(config: RunConfig, run: RunDir) -> tuple[Any, int]:
    """Training rows for GRPO/RLOO and the number of rows per question (arms in a group)."""
    from datasets import Dataset

    questions = read_jsonl(require_input(run.train, "prepare-data"), required=("id", "question", "gold"))
    if config.rl.num_questions is not None:
        questions = questions[: config.rl.num_questions]
    if not questions:
        raise InputError(f"{run.train}: no training questions")
    random.Random(config.seed).shuffle(questions)  # TRL's own shuffling is off so that arms stay together
    fmt = config.model.prompt_format
    if not config.rl.mix_arms:
        rows = [{"prompt": preference_prompt(q["question"], config.model.system_prompt, fmt), "id": q["id"], "gold": q["gold"],
                 "arm": "sft", "family": "compute"} for q in questions]
        return Dataset.from_list(rows), 1
    arms = build_all_arms(config.regime_w)
    rows = [{"prompt": preference_prompt(q["question"], arm.system_prompt, fmt), "id": q["id"], "gold": q["gold"],
             "arm": arm.name, "family": arm.family} for q in questions for arm in arms]
    return Dataset.from_list(rows), len(arms)


def _completion_text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return completion


class RegimeWRewards:
    """Regime W as TRL reward functions: one per part, scored over each question's whole group.

    TRL calls every reward function with the same batch; the parts are computed once per batch and
    cached. ``weights`` are the Regime W coefficients, so sum_k w_k * part_k is the Regime W reward.
    """

    PARTS = ("correct", "consensus", "length", "missing", "truncated")

    def __init__(self, config: RunConfig, max_completion_length: int, eos_token_id: int | None):
        cfg = config.regime_w
        check_reward_config(cfg)
        self.cfg = cfg
        self.max_len = max_completion_length
        self.eos = eos_token_id
        self.penalize_truncation = config.rl.truncation == "penalize"
        self._key: Any = None
        self._parts: dict[str, list[float]] = {}
        self.weights = [cfg.correct_reward, cfg.consensus_weight, -1.0, -cfg.missing_penalty,
                        -cfg.truncation_penalty if self.penalize_truncation else 0.0]

    def _compute(self, completions: list[Any], completion_ids: list[list[int]] | None, id: list[str], gold: list[str],
                 arm: list[str], family: list[str]) -> None:
        key = (tuple(map(str, completions)), tuple(id))
        if key == self._key:
            return
        groups: dict[str, list[int]] = defaultdict(list)
        for i, qid in enumerate(id):
            groups[qid].append(i)
        parts = {p: [0.0] * len(completions) for p in self.PARTS}
        for idx in groups.values():
            outputs = []
            for i in idx:
                ids = completion_ids[i] if completion_ids is not None else []
                truncated = bool(ids) and len(ids) >= self.max_len and ids[-1] != self.eos
                outputs.append(ArmOutput(arm[i], family[i], _completion_text(completions[i]), len(ids), truncated))
            scores, rewards = trajectory_rewards(outputs, gold[idx[0]], self.cfg)
            for i, r in zip(idx, rewards):
                parts["correct"][i] = r.correct
                parts["consensus"][i] = scores.s_wm * r.agree
                parts["length"][i] = r.length_penalty
                parts["missing"][i] = float(r.missing)
                parts["truncated"][i] = float(r.truncated)
        self._key, self._parts = key, parts

    def functions(self) -> list[Any]:
        def make(part: str) -> Any:
            def reward(prompts, completions, completion_ids=None, id=None, gold=None, arm=None, family=None, **kwargs):  # noqa: A002
                self._compute(completions, completion_ids, id, gold, arm, family)
                return self._parts[part]

            reward.__name__ = f"regime_w_{part}"  # TRL logs rewards/<name>/mean
            return reward

        return [make(p) for p in self.PARTS]


def prepare_online(config: RunConfig, run: RunDir) -> tuple[type, dict[str, Any]]:
    """TRL's GRPOTrainer or RLOOTrainer and its arguments, with Regime W as the reward functions."""
    from trl import GRPOTrainer, RLOOTrainer

    kind = config.rl.algorithm
    dataset, per_question = online_dataset(config, run)
    probe = make_trl_config(kind, config, run.work_dir(STAGE))
    tokenizer = load_tokenizer(config.model, padding_side="left")
    rewards = RegimeWRewards(config, probe.max_completion_length, tokenizer.eos_token_id)
    forced: dict[str, Any] = {"reward_weights": rewards.weights, "shuffle_dataset": False,
                              "mask_truncated_completions": config.rl.truncation == "mask"}
    if config.rl.mix_arms:
        # one generation batch = every arm of one question, num_generations completions each
        forced["generation_batch_size"] = probe.num_generations * per_question
        forced["steps_per_generation"] = None
    args = make_trl_config(kind, config, run.work_dir(STAGE), **forced)
    policy = load_policy(config, run)
    return (GRPOTrainer if kind == "grpo" else RLOOTrainer), {
        "model": policy, "reward_funcs": rewards.functions(), "args": args, "train_dataset": dataset, "processing_class": tokenizer}


# ----------------------------------------------------------------------------- stage


def main(config: RunConfig) -> RunDir:
    run = RunDir.of(config)
    chash = stage_hash(config, STAGE)
    if check_stage(run, STAGE, config) and (run.lora_rl / "looper_adapter.json").exists():
        print(f"train-rl: {run.lora_rl} is complete for this config; nothing to do (delete it to train again)")
        return run
    check_output_free(run.lora_rl, chash, STAGE)
    set_seed(config.seed)
    # Inputs, trainer config and models are read and checked before the run folder is written to.
    trainer_cls, trainer_kwargs = (prepare_dpo if config.rl.algorithm == "dpo" else prepare_online)(config, run)
    resume_from = prepare_work_dir(run.work_dir(STAGE), chash, STAGE, run.log_path(STAGE))
    run = start_stage(config, STAGE)
    trainer = trainer_cls(**trainer_kwargs, callbacks=[metrics_callback(run.log_path(STAGE))])
    result = trainer.train(resume_from_checkpoint=resume_from)
    save_atomically(trainer.model, trainer_kwargs["processing_class"], run.lora_rl, {
        "config_hash": chash, "base_model": config.model.name_or_path, "algorithm": config.rl.algorithm,
        "on_top_of": "full SFT checkpoint" if config.sft.method == "full" else "base (adapter includes SFT)",
        "train_loss": result.training_loss, "global_step": result.global_step,
    }, adapter_names=["default"])
    finish_stage(run, STAGE, config, algorithm=config.rl.algorithm, train_loss=result.training_loss, steps=result.global_step)
    print(f"train-rl ({config.rl.algorithm}): {result.global_step} steps, loss {result.training_loss:.4f} -> {run.lora_rl}")
    return run


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "train-rl")
