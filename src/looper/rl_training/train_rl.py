"""train-rl: DPO on Regime W preference pairs, rejection-sampling fine-tuning, or online GRPO / RLOO.

    looper train-rl configs/demo.yaml                       (rl.algorithm: dpo)
    looper train-rl configs/demo.yaml rl.algorithm=rft      (SFT on the rollouts' own correct answers)
    looper train-rl configs/demo.yaml rl.algorithm=grpo     (online, Regime W reward in the loop)
    looper train-rl configs/demo.yaml rl.rounds=3           (iterative: re-collect from the latest policy)
    python -m looper.rl_training.train_rl configs/demo.yaml rl.algorithm=rloo

The policy is the base model (same quantization options as SFT) with the SFT adapter loaded
trainable; training continues that adapter, so ``checkpoints/lora_rl`` holds SFT + RL and loads on
the base model alone. With a full SFT checkpoint (``sft.method: full``) the policy is that
checkpoint plus a fresh LoRA adapter.

DPO reference (``rl.reference``): ``adapter`` (default) loads the base once; TRL copies the SFT
adapter into a frozen "ref" adapter and computes reference log-probabilities through it.
``two_models`` is the plan's layout (docs/plan.md §6): a second base + SFT adapter, frozen.

GRPO / RLOO: each Regime W part is its own TRL reward function (correctness or label-free
consensus, consensus agreement x s_wm, length, missing answer, truncation) with the Regime W weights,
so TRL sums them into exactly the Regime W reward and logs every part. With ``rl.mix_arms`` the
training rows are (question, arm) pairs in question order and one generation batch holds every arm
of one question, so the reward is scored over the whole multi-arm group (s_end, s_path and s_cf
across compute and reflective prompts) while TRL normalises advantages per prompt as usual.
Completions cut at ``max_completion_length`` are penalised by Regime W (``rl.truncation: penalize``)
or masked out of the loss (``mask``, TRL's ``mask_truncated_completions``). ``rl.label_free`` drops
gold from the reward (the s_wm-weighted consensus replaces correctness). Completions come from TRL's own
generation: transformers' ``generate``, or vLLM with ``rl.grpo.use_vllm: true`` (``rl.rloo.use_vllm``;
``vllm_mode: colocate`` shares the training GPU), TRL's options passed through.

RFT (rejection-sampling fine-tuning, the baseline RL methods are measured against): TRL's
SFTTrainer continues the SFT adapter on the distinct correct, untruncated trajectories of the
rollouts (at most ``rl.rft_per_question`` per question, highest Regime W reward first), with the SFT
prompt, as text (the prompt rendered as generation saw it, the completion verbatim, as ``sft.data:
self`` does). Rollouts are made on training questions only, and the stage refuses any other question.

Rounds (``rl.rounds``, dpo and rft): round 1 trains on the run's rollouts; round k > 1 collects new
rollouts from round k-1's adapter on the next training questions, builds pairs (dpo), and continues
training that adapter, all in ``rounds/<k>/`` with its own stage markers, so a killed round resumes
where it stopped. The DPO reference of a round is its starting policy (TRL's frozen copy of the
adapter at the start).
"""

from __future__ import annotations

import copy
import os
import random
from collections import defaultdict
from typing import Any

from looper.baseline_sft.train_sft import correct_texts, generated_example
from looper.config import RunConfig
from looper.errors import ConfigValueError, InputError
from looper.files import read_jsonl, require_input
from looper.generation import make_result
from looper.modeling import checkpoint_end_ids, load_stage_model, load_tokenizer, lora_config, resolve_model_path
from looper.processes import is_main_process, set_seed
from looper.prompts import cut_at_restart, render_messages, render_prompt, template_opens_thought
from looper.regime_w.arms import build_all_arms
from looper.regime_w.reward import (
    REWARD_PARTS,
    ArmOutput,
    check_reward_config,
    reward_part_weights,
    trajectory_rewards,
)
from looper.runs import RunDir
from looper.trainers import TrainingStage, check_lengths, make_trl_config

STAGE = "train-rl"


# ----------------------------------------------------------------------------- policy


def load_policy(config: RunConfig, run: RunDir) -> Any:
    """Base + SFT adapter, trainable (adapter name "default"), or full SFT checkpoint + a fresh LoRA."""
    if config.sft.method == "full":
        from peft import get_peft_model

        model = load_stage_model(config, run, "sft", for_training=True)
        return get_peft_model(model, lora_config(config.sft.lora_preset, config.sft.lora, model))
    if not (run.lora_sft / "adapter_config.json").is_file():
        raise InputError(f"{run.lora_sft}: no SFT adapter; run `looper sft` first")
    return load_stage_model(config, run, "sft", trainable_adapter=True, for_training=True)


def load_reference(config: RunConfig, run: RunDir) -> Any:
    """The plan's two-model layout (docs/plan.md §6): a second, frozen copy of base + SFT, the adapter merged in (TRL
    patches its fused log-prob head onto a plain model, not a PEFT wrapper)."""
    model = load_stage_model(config, run, "sft", for_training=True)  # the trainer's accelerator places it too
    return (
        model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    )  # a full SFT checkpoint has no adapter


# ----------------------------------------------------------------------------- DPO


def dpo_dataset(config: RunConfig, run: RunDir) -> Any:
    from datasets import Dataset

    rows = read_jsonl(require_input(run.preferences, "build-preferences"), required=("prompt", "better", "worse"))
    if not rows:
        raise InputError(f"{run.preferences}: empty; no pairs to train on")
    # Text form, as rft: the prompt as generation saw it and the two answers verbatim (TRL appends the end token).
    # Message form would pass the answers back through the chat template, and a reasoning model's template (DeepSeek-R1)
    # keeps only what follows </think> of an assistant message: DPO would compare two bare answers.
    tokenizer = load_tokenizer(config.model)
    return Dataset.from_list(
        [
            {"prompt": render_messages(tokenizer, r["prompt"]), "chosen": r["better"], "rejected": r["worse"]}
            for r in rows
        ]
    )


def prepare_dpo(config: RunConfig, run: RunDir, args: Any) -> tuple[type, dict[str, Any]]:
    """TRL's DPOTrainer and its arguments: pairs, ``args`` (a DPOConfig), tokenizer, policy (and the two-model
    reference)."""
    from trl import DPOTrainer

    dataset = dpo_dataset(config, run)
    tokenizer = load_tokenizer(config.model)
    if is_main_process():
        check_lengths(dataset, tokenizer, args.max_length, "rl.dpo", completions=("chosen", "rejected"))
    policy = load_policy(config, run)
    ref = load_reference(config, run) if config.rl.reference == "two_models" else None
    return DPOTrainer, {
        "model": policy,
        "ref_model": ref,
        "args": args,
        "train_dataset": dataset,
        "processing_class": tokenizer,
    }


# ----------------------------------------------------------------------------- RFT


def rft_dataset(config: RunConfig, run: RunDir) -> Any:
    """Prompt-completion examples from the rollouts' correct trajectories, training questions only."""
    from datasets import Dataset

    records = read_jsonl(
        require_input(run.rollouts, "collect-rollouts"), required=("id", "question", "gold", "trajectories")
    )
    train_ids = {r["id"] for r in read_jsonl(require_input(run.train, "prepare-data"), required=("id",))}
    foreign = [r["id"] for r in records if r["id"] not in train_ids]
    if foreign:
        raise InputError(
            f"{run.rollouts}: {len(foreign)} questions are not in the train split {run.train} (e.g. "
            f"{foreign[0]!r}); rejection-sampling data is built from training questions only"
        )
    tokenizer = load_tokenizer(config.model)
    examples, questions = [], 0
    for rec in records:
        best_first = sorted(rec["trajectories"], key=lambda t: -t["reward"])  # stable: ties keep arm order
        kept = correct_texts(
            [(t["text"], t["parts"]["correct"] == 1.0, t["truncated"]) for t in best_first], config.rl.rft_per_question
        )
        examples += [{**generated_example(tokenizer, config, rec["question"], text), "id": rec["id"]} for text in kept]
        questions += bool(kept)
    if not examples:
        raise InputError(
            f"{run.rollouts}: no correct, untruncated trajectory in {len(records)} questions; "
            "sample more (rollouts.samples_per_arm, rollouts.num_questions) or use rl.algorithm=dpo"
        )
    print(f"train-rl (rft): {len(examples)} correct trajectories from {questions} of {len(records)} questions")
    return Dataset.from_list(examples)


def prepare_rft(config: RunConfig, run: RunDir, args: Any) -> tuple[type, dict[str, Any]]:
    """TRL's SFTTrainer on the policy (SFT adapter, trainable) and the rollouts' correct trajectories; ``args``: an
    SFTConfig from ``rl.rft``."""
    from trl import SFTTrainer

    dataset = rft_dataset(config, run).remove_columns("id")
    tokenizer = load_tokenizer(config.model)
    if is_main_process():
        check_lengths(dataset, tokenizer, args.max_length, "rl.rft")
    return SFTTrainer, {
        "model": load_policy(config, run),
        "args": args,
        "train_dataset": dataset,
        "processing_class": tokenizer,
    }


# ----------------------------------------------------------------------------- GRPO / RLOO


def online_dataset(config: RunConfig, run: RunDir, tokenizer: Any) -> Any:
    """Training rows for GRPO/RLOO: one per question, or with ``rl.mix_arms`` one per (question, arm) in question
    order (``trainers.online_settings`` makes a generation batch of whole questions). Prompts are text, as
    the engines see them (TRL encodes text prompts with the tokenizer's special tokens, ``render_prompt``)."""
    from datasets import Dataset

    questions = read_jsonl(require_input(run.train, "prepare-data"), required=("id", "question", "gold"))
    if config.rl.num_questions is not None:
        questions = questions[: config.rl.num_questions]
    if not questions:
        raise InputError(f"{run.train}: no training questions")
    random.Random(config.seed).shuffle(questions)  # TRL's own shuffling is off so that arms stay together
    fmt = config.model.prompt_format
    if not config.rl.mix_arms:
        rows = [
            {
                "prompt": render_prompt(tokenizer, q["question"], config.model.system_prompt, fmt),
                "id": q["id"],
                "gold": q["gold"],
                "arm": "sft",
                "family": "compute",
            }
            for q in questions
        ]
        return Dataset.from_list(rows)
    arms = build_all_arms(config.regime_w)
    rows = [
        {
            "prompt": render_prompt(tokenizer, q["question"], arm.system_prompt, fmt),
            "id": q["id"],
            "gold": q["gold"],
            "arm": arm.name,
            "family": arm.family,
        }
        for q in questions
        for arm in arms
    ]
    return Dataset.from_list(rows)


def _completion_text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return completion


class RegimeWRewards:
    """Regime W as TRL reward functions: one per part, scored over each question's whole group.

    TRL calls every reward function with the same batch; the parts are computed once per batch and
    cached. ``weights`` are the Regime W coefficients, so sum_k w_k * part_k is the Regime W reward. With ``tokenizer``
    the completions are read from their ids as the engines read them (``generation.make_result``): TRL's own text drops
    every special token, thought markers included where the tokenizer makes them special. Either way a completion ends
    where it begins its prompt's format again (``prompts.format_restarts``), and one that stopped there is not
    truncated.
    """

    PARTS = REWARD_PARTS

    def __init__(
        self,
        config: RunConfig,
        max_completion_length: int,
        end_ids: list[int],
        thought_open: bool = False,
        tokenizer: Any = None,
    ):
        cfg = config.regime_w
        self.tokenizer = tokenizer
        self.thought_open = thought_open  # the prompts left a thought open: a completion must close it to answer
        check_reward_config(cfg)
        self.cfg = cfg
        self.use_gold = not config.rl.label_free
        self.max_len = max_completion_length
        self.end_ids = set(end_ids)  # every id that ends the model's turn (modeling.end_token_ids)
        self.penalize_truncation = config.rl.truncation == "penalize"
        self._key: Any = None
        self._parts: dict[str, list[float]] = {}
        self.weights = reward_part_weights(cfg, self.penalize_truncation)

    def _compute(
        self,
        prompts: list[Any] | None,
        completions: list[Any],
        completion_ids: list[list[int]] | None,
        id: list[str],
        gold: list[str],
        arm: list[str],
        family: list[str],
    ) -> None:
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
                # TRL does not stop where a plain prompt's format begins again: the completion is cut there as the
                # engines cut theirs (make_result), so the reward reads what eval scores
                prompt = _completion_text(prompts[i]) if prompts is not None else ""
                if self.tokenizer is not None and completion_ids is not None:
                    result = make_result(
                        id[i], list(completion_ids[i]), sorted(self.end_ids), self.max_len, self.tokenizer, prompt
                    )
                    text, num_tokens, truncated = result.text, result.num_tokens, result.truncated
                else:  # TRL's own text (every special token dropped)
                    ids = completion_ids[i] if completion_ids is not None else []
                    text = _completion_text(completions[i])
                    cut = cut_at_restart(text, prompt)
                    truncated = cut is None and bool(ids) and len(ids) >= self.max_len and ids[-1] not in self.end_ids
                    text, num_tokens = (text if cut is None else cut), len(ids)
                outputs.append(ArmOutput(arm[i], family[i], text, num_tokens, truncated, self.thought_open))
            scores, rewards = trajectory_rewards(outputs, gold[idx[0]] if self.use_gold else None, self.cfg)
            for i, r in zip(idx, rewards):
                parts["correct"][i] = r.correct
                parts["consensus"][i] = scores.s_wm * r.agree
                parts["length"][i] = r.length_penalty
                parts["missing"][i] = float(r.missing)
                parts["truncated"][i] = float(r.truncated)
        self._key, self._parts = key, parts

    def functions(self) -> list[Any]:
        def make(part: str) -> Any:
            def reward(prompts, completions, completion_ids=None, id=None, gold=None, arm=None, family=None, **kwargs):
                self._compute(prompts, completions, completion_ids, id, gold, arm, family)
                return self._parts[part]

            reward.__name__ = f"regime_w_{part}"  # TRL logs rewards/<name>/mean
            return reward

        return [make(p) for p in self.PARTS]


def prepare_online(config: RunConfig, run: RunDir, args: Any) -> tuple[type, dict[str, Any]]:
    """TRL's GRPOTrainer or RLOOTrainer and its arguments, with Regime W as the reward functions; ``args``: the
    GRPOConfig / RLOOConfig, whose reward weights, shuffling and generation batch looper set
    (``trainers.online_settings``)."""
    from trl import GRPOTrainer, RLOOTrainer

    tokenizer = load_tokenizer(config.model, padding_side="left")
    dataset = online_dataset(config, run, tokenizer)
    end_ids = checkpoint_end_ids(resolve_model_path(config.model.name_or_path), tokenizer, config.model.revision)
    rewards = RegimeWRewards(
        config,
        args.max_completion_length,
        end_ids,
        template_opens_thought(tokenizer, config.model.prompt_format),
        tokenizer,
    )
    return (GRPOTrainer if config.rl.algorithm == "grpo" else RLOOTrainer), {
        "model": load_policy(config, run),
        "reward_funcs": rewards.functions(),
        "args": args,
        "train_dataset": dataset,
        "processing_class": tokenizer,
    }


# ----------------------------------------------------------------------------- stage


PREPARE = {"dpo": prepare_dpo, "rft": prepare_rft, "grpo": prepare_online, "rloo": prepare_online}


def train_round(config: RunConfig, run: RunDir, round_: int, args: Any) -> None:
    """Train one round's adapter (round 1: on the run's own rollouts / pairs / questions) with ``args``, the
    command's TRL config, in this round's work folder."""
    label = f"train-rl ({config.rl.algorithm}{f', round {round_}' if round_ > 1 else ''})"
    stage = TrainingStage(config, STAGE, run, run.lora_rl, f"rl.{config.rl.algorithm}", label)
    if stage.done():
        return
    stage.check()  # before the models load, not only before training
    set_seed(config.seed)
    # Inputs, trainer config and models are read and checked before the run folder is written to.
    args = copy.copy(args)  # a shallow copy, not dataclasses.replace: the config is not built (and checked) again
    args.output_dir = str(run.work_dir(STAGE))
    trainer_cls, trainer_kwargs = PREPARE[config.rl.algorithm](config, run, args)
    trainer = trainer_cls(**trainer_kwargs)
    result = stage.train(trainer)
    stage.finish_training(
        trainer,
        trainer_kwargs["processing_class"],
        result,
        adapter_names=["default"],
        record={
            "base_model": config.model.name_or_path,
            "algorithm": config.rl.algorithm,
            "round": round_,
            "on_top_of": "full SFT checkpoint" if config.sft.method == "full" else "base (adapter includes SFT)",
        },
        marker={"algorithm": config.rl.algorithm, "round": round_},
    )


def check_one_process(config: RunConfig) -> None:
    """Refuse GRPO / RLOO under a launch of several processes (ConfigValueError). TRL's sampler hands a prompt's
    completions to different processes, and each process calls the reward on its own share, so a Regime W group
    (a question's arms and samples, whose agreement s_end, s_cf and the consensus measure) would be scored in pieces:
    one process seeing only compute arms scores s_cf 0. Gathering the groups across processes inside a TRL reward
    function is not something TRL offers; until then the launch is refused."""
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch and torchrun
    if config.rl.algorithm in ("grpo", "rloo") and world > 1:
        raise ConfigValueError(
            f"rl.algorithm={config.rl.algorithm} under {world} processes: TRL spreads a question's "
            "completions over the processes, so the Regime W reward would score each group in pieces; "
            "run train-rl in one process (without accelerate launch / torchrun)",
            fields=("rl.algorithm",),
        )


def main(config: RunConfig, args: Any = None) -> RunDir:
    """Train ``rl.rounds`` rounds with ``args``, the RL algorithm's TRL config (built here when not given: the
    pipeline builds it once for the whole command)."""
    check_one_process(config)
    run = RunDir.of(config)
    # built once, before anything in the run folder is read (a finished round compared with a bad value would report
    # it as other settings) and before round k > 1 samples its rollouts
    if args is None:
        args = make_trl_config(config.rl.algorithm, config, run.work_dir(STAGE))
    rounds = config.rl.num_rounds
    if rounds > 1 and config.sft.method == "full":
        raise ConfigValueError(
            "rl.rounds > 1 continues each round's LoRA adapter; it needs sft.method=lora",
            fields=("rl.rounds", "sft.method"),
        )
    for k in range(1, rounds + 1):
        if k > 1:  # round k samples round k-1's adapter on new questions, then trains on top of it
            from looper.rl_training import build_preferences, collect_rollouts

            print(f"\n=== train-rl: round {k} of {rounds} ({run.round(k).root}) ===", flush=True)
            collect_rollouts.main(config, run.round(k), round_=k)
            if config.rl.algorithm == "dpo":
                build_preferences.main(config, run.round(k))
        train_round(config, run.round(k), k, args)
    return run


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "train-rl")
