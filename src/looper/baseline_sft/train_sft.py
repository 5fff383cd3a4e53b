"""sft: supervised fine-tuning on GSM8K solutions with TRL's SFTTrainer (LoRA / QLoRA, or full).

    looper sft configs/demo.yaml
    python -m looper.baseline_sft.train_sft configs/r1-distill-llama-8b.yaml sft.lora_preset=aggressive

Trains on the run's train split (``data/gsm8k_train.jsonl``) with the plan's prompt (docs/plan.md §2: "You are a careful math tutor ...",
the problem, "Solution:") or the model's chat template (``model.prompt_format: chat``); the target
is GSM8K's full worked solution and the loss is on the completion only (TRL's prompt-completion
format). ``sft.method: lora`` saves a PEFT adapter + tokenizer to ``checkpoints/lora_sft``;
``sft.method: full`` saves the whole model to ``checkpoints/sft``. Killing the run and running the
same command again resumes from the last trainer checkpoint in ``work/sft``.

``sft.data: self`` trains on the base model's own correct answers instead of GSM8K's solutions
(rejection sampling, for reasoning models whose long thinking GSM8K's short solutions would train
away): ``sft.self_data.samples`` samples per training question are drawn with the rollouts engine,
appended per question to ``data/sft_self_samples.jsonl`` (resumable; sharded across processes like
collect-rollouts), checked by the one answer checker (``regime_w.answer_mode``), and up to
``per_question`` distinct correct, untruncated ones per question become prompt-completion examples.
Those examples are text, not messages: the prompt is rendered by the chat template as generation
saw it, and the completion is the generated text verbatim (an R1-style template would otherwise drop
everything before ``</think>`` from an assistant message, i.e. the reasoning to be learnt).
"""

from __future__ import annotations

from typing import Any

from looper.answers import is_correct
from looper.config import RunConfig
from looper.errors import ConfigValueError, InputError
from looper.files import read_jsonl, require_input
from looper.generation import GenRequest, GenResult, LazyEngine, generate_records, open_engine, resolve_engine
from looper.modeling import check_quantization, load_model, load_tokenizer, lora_config, resolve_dtype, sharded_training
from looper.processes import Shards, derive_seed, is_main_process, set_seed
from looper.prompts import render_prompt, sft_example, template_opens_thought
from looper.runs import ResumableOutput, RunDir, self_sampling_sections
from looper.trainers import TrainingStage, check_lengths, make_trl_config

STAGE = "sft"


def sft_output_dir(run: RunDir, config: RunConfig):
    return run.lora_sft if config.sft.method == "lora" else run.full_sft


def full_sft_memory_estimate(model: Any, args: Any, shards: int = 1) -> dict[str, float]:
    """GiB needed per GPU to train every weight: weights + gradients + optimizer states + activations.

    Optimizer: AdamW keeps two fp32 moments per weight (8 bytes); bitsandbytes' 8-bit / paged 8-bit
    AdamW keeps two 1-byte moments (2 bytes). Activations: with gradient checkpointing, one hidden
    state per layer per token is kept (plus one layer's full activations being recomputed); without,
    about 34 hidden-size values per layer per token (Korthikanti et al., 2022), in the weights' dtype.
    ``shards``: the GPUs that FSDP / ZeRO-3 split weights, gradients and optimizer states over (activations are
    per GPU; FSDP also gathers one layer's full weights at a time, a small extra left out).
    """
    n = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())  # ZeRO-3 builds them partitioned (numel 0)
    width = next(model.parameters()).element_size()
    act_width = 2 if (args.bf16 or args.fp16) else width  # under autocast activations are 16-bit whatever the weights
    c = model.config
    tokens = args.per_device_train_batch_size * (args.max_length or 1024)
    optim_bytes = 2 if "8bit" in str(args.optim) else 8
    per_layer = 2 if args.activation_checkpointing else 34
    activations = (
        tokens
        * c.hidden_size
        * act_width
        * (per_layer * c.num_hidden_layers + (34 if args.activation_checkpointing else 0))
    )
    logits = tokens * c.vocab_size * 4 * 2  # fp32 logits and their gradient
    gib = 2**30
    est = {
        "weights": n * width / gib / shards,
        "gradients": n * width / gib / shards,
        "optimizer": n * optim_bytes / gib / shards,
        "activations": (activations + logits) / gib,
    }
    est["total"] = sum(est.values())
    return est


def master_weights_dtype(config: RunConfig) -> Any:
    """float32 for full SFT in one process per model copy (one GPU, DDP) when ``model.dtype`` is 16-bit: the trainer
    then runs the forward and backward passes in bf16 / fp16 autocast and the optimizer updates float32 weights.
    Updating bf16 weights directly loses every step smaller than half the weight's bf16 spacing (about 1/256 of
    the weight): at lr 1e-5 an 8B model's weights (~0.02) do not move, and a measured run's loss stalled at the
    uniform distribution's (docs/scaling.md). FSDP / ZeRO-3 keep float32 master weights themselves
    (accelerate's mixed precision), so they load ``model.dtype`` as it is. None: load ``model.dtype``."""
    import torch

    if config.sft.method != "full" or sharded_training():
        return None
    return torch.float32 if resolve_dtype(config.model.dtype) in (torch.bfloat16, torch.float16) else None


def check_full_sft_fits(model: Any, args: Any) -> None:
    """Print the per-GPU estimate; refuse before training when it cannot fit, naming the ways out."""
    import torch

    sharded = sharded_training()
    shards = args.world_size if sharded else 1
    est = full_sft_memory_estimate(model, args, shards)
    parts = ", ".join(f"{k} {v:.1f}" for k, v in est.items())
    print(f"sft (full): memory estimate per GPU, GiB{f' ({sharded} over {shards} GPUs)' if sharded else ''}: {parts}")
    if torch.cuda.is_available():
        have = torch.cuda.get_device_properties(0).total_memory / 2**30
        if est["total"] > 0.95 * have:
            more = (
                "more GPUs"
                if sharded
                else "several GPUs: accelerate launch --config_file configs/accelerate/fsdp.yaml (or deepspeed_zero3.yaml) "
                "-m looper.cli sft ..., which splits weights, gradients and optimizer states over them (docs/scaling.md)"
            )
            raise InputError(
                f"full SFT needs about {est['total']:.0f} GiB per GPU but this GPU has {have:.0f} GiB ({parts}). "
                "Options: sft.trainer.optim=paged_adamw_8bit, sft.trainer.activation_checkpointing=true, a smaller "
                f"max_length, or {more}."
            )


def build_dataset(config: RunConfig, run: RunDir) -> Any:
    from datasets import Dataset

    rows = read_jsonl(run.train, required=("question", "answer"))
    if not rows:
        raise InputError(f"{run.train}: the training set is empty")
    if config.sft.data == "self":
        return Dataset.from_list(self_examples(config, run))
    tokenizer = load_tokenizer(config.model)
    examples = [
        sft_example(tokenizer, r["question"], r["answer"], config.model.system_prompt, config.model.prompt_format)
        for r in rows
    ]
    return Dataset.from_list(examples)


def _self_data_settings(config: RunConfig) -> dict[str, Any]:
    """What the self samples depend on: the seed, the data and model sections, sft.self_data, and the rollouts'
    engine and answer mode they are drawn and judged with (``runs.self_sampling_sections``)."""
    everything = config.to_dict()
    return (
        {k: everything[k] for k in ("seed", "data", "model")}
        | {"self_data": everything["sft"]["self_data"]}
        | self_sampling_sections(everything)
    )


def self_samples(config: RunConfig, run: RunDir) -> ResumableOutput:
    """The self-data samples (``run.sft_self_samples``), checked: an InputError when other sampling settings began
    them; reads only."""
    samples = ResumableOutput(run.sft_self_samples, _self_data_settings(config), Shards())
    samples.check()
    return samples


def sample_self_data(config: RunConfig, run: RunDir) -> list[dict[str, Any]]:
    """The base model's samples of every training question, one record per question (resumable)."""
    sd = config.sft.self_data
    questions = read_jsonl(run.train, required=("id", "question", "gold"))[: sd.max_questions]
    samples = self_samples(config, run)
    if samples.complete:
        return samples.records()
    engine = resolve_engine(config.rollouts.engine, "rollouts.engine")
    shards = samples.shards
    my_file = samples.begin()
    tokenizer = load_tokenizer(config.model)
    thought_open = template_opens_thought(tokenizer, config.model.prompt_format)

    def requests_of(q: dict[str, Any]) -> list[GenRequest]:
        prompt = render_prompt(tokenizer, q["question"], config.model.system_prompt, config.model.prompt_format)
        return [
            GenRequest(s, prompt, sd.temperature, sd.top_p, derive_seed(config.seed, q["id"], "sft-self", s))
            for s in range(sd.samples)
        ]

    def record_of(q: dict[str, Any], results: list[GenResult]) -> dict[str, Any]:
        return {
            "id": q["id"],
            "question": q["question"],
            "gold": q["gold"],
            "samples": [
                {
                    "text": r.text,
                    "num_tokens": r.num_tokens,
                    "truncated": r.truncated,
                    "correct": is_correct(r.text, q["gold"], config.regime_w.answer_mode, thought_open),
                }
                for r in results
            ],
        }

    print(f"sft (self data): sampling {len(questions)} questions x {sd.samples} with the base model")
    with LazyEngine(lambda: open_engine(config, run, "base", engine, "rollouts", sd.max_new_tokens, tokenizer)) as lazy:
        generate_records(
            lazy, my_file, shards.mine(questions), requests_of, record_of, sd.max_new_tokens, "sft self data"
        )
    samples.finish([q["id"] for q in questions])
    return samples.records()


def correct_texts(samples: list[tuple[str, bool, bool]], limit: int) -> list[str]:
    """The distinct texts of the (text, correct, truncated) samples that are correct and not truncated, in
    order, at most ``limit``: what rejection sampling keeps of one question (here and in train-rl's rft)."""
    kept: list[str] = []
    for text, correct, truncated in samples:
        if correct and not truncated and text.strip() not in kept and len(kept) < limit:
            kept.append(text.strip())
    return kept


def generated_example(tokenizer: Any, config: RunConfig, question: str, text: str) -> dict[str, str]:
    """A prompt-completion example from a generated answer: the prompt as generation saw it (chat template
    applied), the completion verbatim (TRL appends the end-of-sequence token)."""
    return {
        "prompt": render_prompt(tokenizer, question, config.model.system_prompt, config.model.prompt_format),
        "completion": text,
    }


def self_examples(config: RunConfig, run: RunDir) -> list[dict[str, str]]:
    """Prompt-completion text examples from the base model's distinct correct, untruncated samples."""
    records = sample_self_data(config, run)
    tokenizer = load_tokenizer(config.model)
    examples, kept_questions = [], 0
    for rec in records:
        kept = correct_texts(
            [(s["text"], s["correct"], s["truncated"]) for s in rec["samples"]], config.sft.self_data.per_question
        )
        kept_questions += bool(kept)
        examples += [generated_example(tokenizer, config, rec["question"], text) for text in kept]
    samples = sum(len(r["samples"]) for r in records)
    truncated = sum(s["truncated"] for r in records for s in r["samples"])
    print(
        f"sft (self data): {len(examples)} examples from {kept_questions} of {len(records)} questions "
        f"({truncated / max(1, samples):.1%} of {samples} samples truncated at {config.sft.self_data.max_new_tokens} tokens)"
    )
    if not examples:
        raise InputError(
            f"{run.sft_self_samples}: the base model answered no training question correctly "
            f"({samples} samples); raise sft.self_data.samples / max_new_tokens or use sft.data=gold"
        )
    return examples


def main(config: RunConfig, args: Any = None) -> RunDir:
    """Fine-tune with ``args``, the SFTConfig (built here when not given: the pipeline builds it once for the whole
    command)."""
    run = RunDir.of(config)
    # the trainer section, built once, before anything in the run folder: a finished sft compared with a bad value
    # would report it as other settings
    if args is None:
        args = make_trl_config("sft", config, run.work_dir(STAGE))
    require_input(run.train, "prepare-data")
    stage = TrainingStage(config, STAGE, run, sft_output_dir(run, config), "sft.trainer")
    if stage.done():
        return run
    if config.sft.method == "full" and config.model.quantization != "none":
        raise ConfigValueError(
            "sft.method=full trains every weight and cannot use a quantized base; set model.quantization=none",
            fields=("sft.method", "model.quantization"),
        )
    check_quantization(config.model.quantization)  # before the length check and any sampling, not at model load
    # Everything a bad input can break is read and checked before the run folder is written to: sft.data=self
    # samples before it trains
    if config.sft.data == "self":
        self_samples(config, run)  # first in the data flow, so named first
    stage.check()  # before sampling and loading, not only before training
    dataset = build_dataset(config, run)
    tokenizer = load_tokenizer(config.model)
    lengths = check_lengths(dataset, tokenizer, args.max_length, "sft.trainer") if is_main_process() else {}
    set_seed(config.seed)  # before the model: LoRA's initial weights are drawn from it
    master = master_weights_dtype(config)
    model = load_model(config.model, for_training=True, dtype=master)
    peft_config = lora_config(config.sft.lora_preset, config.sft.lora, model) if config.sft.method == "lora" else None
    if config.sft.method == "full":
        check_full_sft_fits(model, args)

    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    if peft_config is not None:
        trainer.model.print_trainable_parameters()
    result = stage.train(trainer)
    if master is not None:
        trainer.model.to(resolve_dtype(config.model.dtype))  # saved (and loaded by later stages) in model.dtype
    stage.finish_training(
        trainer,
        tokenizer,
        result,
        record={"base_model": config.model.name_or_path, "method": config.sft.method},
        marker={"output": str(stage.output), **lengths},
    )
    return stage.run


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "sft")
