"""``looper plan CONFIG``: what a run will do, stage by stage, and what it costs on one GPU, before anything runs.

    looper plan configs/r1-distill-llama-8b.yaml
    looper plan configs/r1-distill-llama-8b.yaml rl.algorithm=grpo

Work comes from the config and the data sizes (the run's prepared splits when prepare-data has run, else the
source's published sizes: GSM8K 7,473 train / 1,319 test, GSM8K-Platinum 1,209): questions, sequences and the
tokens each generating stage may produce at most (its ``max_new_tokens``), examples and optimizer steps of the
training stages. Time is that work over a rate measured on one GPU (an H200, or for the real Qwen model an H100: each
architecture's rates name theirs) for the model's architecture and the stage's setting (``plan_rates.yaml`` beside
this module, each rate with the raw file under docs/bench/ it comes from), so it
is an upper bound for generation (answers usually stop before the limit), marked '~' where the rate was measured at
shorter answers than the stage generates (not a bound then), and left out where nothing comparable was measured.
SFT's tokens are counted with the model's tokenizer when the train split is prepared and the tokenizer is on this
machine (``sft_tokens``; self data: an upper bound). No model is loaded and nothing is downloaded.
"""

from __future__ import annotations

import importlib.resources
import json
import math
from dataclasses import dataclass
from typing import Any

import yaml

from looper.config import RunConfig
from looper.errors import ConfigValueError
from looper.regime_w.arms import build_all_arms
from looper.regime_w.reward import check_reward_config
from looper.runs import RunDir, changed_settings, stage_marker, stage_sections

GSM8K_SIZES = {"train": 7473, "test": 1319, "platinum": 1209}  # openai/gsm8k main; madrylab/gsm8k-platinum (kept rows)
# what torch reports for each GPU the rates were measured on (docs/benchmarks.md): vLLM's share is of this
GPU_GIB = {"H200": 139.8, "H100": 79.2}
VLLM_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's EngineArgs default: the share of the GPU its engine reserves
FILLED = "every example at max_length"  # SFT's bound where its examples were not counted


@dataclass(frozen=True)
class Rate:
    tokens_per_s: float
    peak_gib: float | None
    measured: str  # the setting it was measured at
    source: str  # raw file under docs/bench/
    # False where measured at shorter answers than the stages generate: each token attends to a longer cache
    # further on, so a stage's time can exceed what this rate gives
    upper_bound: bool = True
    gpu: str = "H200"  # the GPU it was measured on (a key of GPU_GIB)


def load_rates() -> dict[tuple[str, str], Rate]:
    """The measured rates by (architecture, work), read from ``plan_rates.yaml``, which ships beside this module:
    each entry's fields are ``Rate``'s, and the file's comments say where a rate comes from.

    Raises:
        TypeError: an entry with a field ``Rate`` does not have, or without one it needs.
        ValueError: an architecture whose rates were measured on different GPUs (a plan's minutes are on one GPU),
            or a GPU whose memory ``GPU_GIB`` does not know.
    """
    rates = yaml.safe_load(importlib.resources.files("looper").joinpath("plan_rates.yaml").read_text())
    loaded = {(arch, work): Rate(**fields) for arch, works in rates.items() for work, fields in works.items()}
    for arch in rates:
        gpus = {rate.gpu for (a, _), rate in loaded.items() if a == arch}
        if len(gpus) != 1 or not gpus <= set(GPU_GIB):
            raise ValueError(
                f"plan_rates.yaml: {arch}'s rates must all come from one GPU of {sorted(GPU_GIB)}; "
                f"they name {sorted(gpus)}"
            )
    return loaded


RATES = load_rates()


def architecture(name_or_path: str) -> str | None:
    """The measured architecture a model name stands for (None: nothing measured for it)."""
    lower = name_or_path.lower()
    if "smollm2-135m" in lower:
        return "smollm2-135m"
    if "llama" in lower and "8b" in lower:
        return "llama-8b"
    if "qwen2.5" in lower and "1.5b" in lower:  # Qwen2.5-1.5B's shape: the Coder-Instruct model was measured
        return "qwen2.5-1.5b"
    return None


def measured_on(arch: str | None) -> str:
    """The GPU an architecture's rates were measured on (H200 where none were: the GPU the 8B configs are for)."""
    return next((rate.gpu for (a, _), rate in RATES.items() if a == arch), "H200")


def split_sizes(config: RunConfig, run: RunDir) -> dict[str, int]:
    """Questions per split: the prepared files when they exist, else the source's sizes after the 80/20 split."""
    prepared = run.data_info
    # the run folder's prepared splits count only if they were made with this config's data settings
    if (
        prepared.is_file()
        and changed_settings(stage_marker(run, "prepare-data"), stage_sections(config, "prepare-data")) == []
    ):
        counts = json.loads(prepared.read_text()).get("counts", {})
        if counts:
            return {k.removeprefix(f"{config.data.name}_"): v for k, v in counts.items()}
    data = config.data
    if data.source == "gsm_symbolic":
        train_all, test = data.symbolic_train_size, data.symbolic_test_size
    else:
        train_all, test = GSM8K_SIZES["train"], GSM8K_SIZES["test"]
    train_all = min(train_all, data.max_train or train_all)
    dev = max(1, round(train_all * data.dev_fraction))
    sizes = {"train": train_all - dev, "dev": dev, "test": min(test, data.max_test or test)}
    if data.platinum.source != "none":
        sizes["platinum_test"] = GSM8K_SIZES["platinum"]
    return sizes


def sft_tokens(config: RunConfig, run: RunDir, cut: int | None) -> int | None:
    """Tokens of one epoch of SFT examples, each cut at ``cut`` tokens when set, counted with the model's tokenizer
    when the train split is prepared and the tokenizer is on this machine already; None otherwise (nothing is
    downloaded). ``sft.data=gold``: the written solutions' examples. ``sft.data=self``: an upper bound, every sampled
    question keeping ``min(per_question, samples)`` answers of ``max_new_tokens`` tokens (what sampling keeps is
    not known before it runs; a truncated answer is never kept, so none is longer)."""
    from transformers import AutoTokenizer

    from looper.config import EMBEDDED_MODEL
    from looper.files import read_jsonl
    from looper.modeling import cache_dir
    from looper.prompts import render_prompt, sft_example

    if not run.train.is_file():
        return None
    name = config.model.name_or_path
    path = str(cache_dir() / "smollm2-135m-instruct") if name == EMBEDDED_MODEL else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, revision=config.model.revision)
    except OSError:
        return None
    model, sd = config.model, config.sft.self_data
    rows = read_jsonl(run.train, required=("question", "answer"))
    if config.sft.data == "gold":
        examples = (
            sft_example(tokenizer, r["question"], r["answer"], model.system_prompt, model.prompt_format) for r in rows
        )
        lengths, copies = [len(tokenizer(ex["prompt"] + ex["completion"])["input_ids"]) + 1 for ex in examples], 1
    else:
        prompts = (
            render_prompt(tokenizer, r["question"], model.system_prompt, model.prompt_format)
            for r in rows[: sd.max_questions]
        )
        lengths, copies = (
            [len(tokenizer(p)["input_ids"]) + sd.max_new_tokens + 1 for p in prompts],
            min(sd.per_question, sd.samples),
        )
    # + 1: the end-of-sequence token TRL appends
    return copies * sum(min(cut, n) if cut else n for n in lengths)


def _minutes(tokens: float, rate: Rate | None) -> str:
    """'<= N' minutes (to the nearest minute; '< 1' under half of one, not '<= 0'), '~N' where the rate is not an
    upper bound (``Rate.upper_bound``), or '-' without a rate."""
    if not rate:
        return "-"
    minutes = tokens / rate.tokens_per_s / 60
    if minutes < 0.5:
        return "< 1"
    return f"<= {minutes:,.0f}" if rate.upper_bound else f"~{minutes:,.0f}"


def _row(
    stage: str, work: str, tokens: float | None, kind: str, rate: Rate | None, peak: str | None = None
) -> dict[str, Any]:
    """One stage's row; ``peak``: its peak-memory cell where the rate's measured peak is not the stage's (vLLM)."""
    return {"stage": stage, "work": work, "tokens": tokens, "kind": kind, "rate": rate, "peak": peak}


def plan_rows(config: RunConfig) -> list[dict[str, Any]]:
    """One row per stage of work: stage, work in words, tokens (generated at most, or trained), the rate used.

    Raises:
        ConfigError: a trainer section that sft or train-rl would refuse (``trl_config``, the stages' own check).
        ConfigValueError: an unknown dataset in ``eval.datasets``, or eval settings that the pipeline refuses
            before its first stage (``check_protocol``: no model or dataset, one named twice, a contradicted protocol).
        InputError: ``eval.protocol=lm-eval`` without lm-evaluation-harness installed.
    """
    from looper.eval.eval_gsm8k import DATASETS, check_protocol
    from looper.trainers import trl_config

    arch = architecture(config.model.name_or_path)
    gpu_gib = GPU_GIB[measured_on(arch)]
    run = RunDir.of(config)
    # the trainers' settings as the stages will use them: looper's defaults under the YAML's, checked as they check them
    # (but for this machine's hardware: `looper plan` is for the GPU the run is meant for)
    sft_args = trl_config("sft", config, run.work_dir("sft"), on_this_machine=False)
    rl_args = trl_config(config.rl.algorithm, config, run.work_dir("train-rl"), on_this_machine=False)
    check_protocol(config)  # the eval settings the pipeline refuses before its first stage
    sizes = split_sizes(config, run)
    check_reward_config(config.regime_w)  # the arms and reward settings collect-rollouts and train-rl would refuse
    arms = len(build_all_arms(config.regime_w))  # the default arms with the config's additions, as selected
    rows = []

    def rate(key: str) -> Rate | None:
        return RATES.get((arch, key)) if arch else None

    def generation(engine: str) -> Rate | None:
        # auto is vLLM on a GPU with looper's vllm extra; a quantized base has its own rate, except 8-bit in vLLM,
        # which has no in-flight 8-bit and generates from the bf16 base (vllm_engine_args)
        quant = config.model.quantization
        if engine == "hf":
            return rate("generate:hf" + ("" if quant == "none" else ":" + quant))
        return rate("generate:vllm" + (":4bit" if quant == "4bit" else ""))

    def vllm_peak(engine: str, overrides: dict[str, Any]) -> str | None:
        # vLLM's engine takes its share of the GPU up front, whatever the work: that share is the stage's peak
        if engine == "hf":
            return None
        share = float(overrides.get("gpu_memory_utilization", VLLM_GPU_MEMORY_UTILIZATION))
        return f"{share * gpu_gib:.1f} (vLLM: {share:g} of the GPU)"

    def lora_sft(args: Any) -> Rate | None:
        # TRL's SFTTrainer on a LoRA adapter (sft, and rft on the SFT adapter), over the base as quantized
        quant = config.model.quantization
        return rate(
            "sft:"
            + (
                "4bit"
                if quant == "4bit"
                else "8bit"
                if quant == "8bit"
                else "bf16:liger"
                if args.use_liger_kernel
                else "bf16"
            )
        )

    sft = config.sft
    if sft.data == "self":
        sd = sft.self_data
        questions = min(sizes["train"], sd.max_questions or sizes["train"])
        sequences = questions * sd.samples
        rows.append(
            _row(
                "sft (self data)",
                f"{questions:,} questions x {sd.samples} samples = {sequences:,} answers",
                sequences * sd.max_new_tokens,
                "generated, at most",
                generation(config.rollouts.engine),
                vllm_peak(config.rollouts.engine, config.rollouts.vllm),
            )
        )
    # as written in the YAML or looper's defaults (TRAINER_DEFAULTS): ints stay ints
    epochs, steps, length = sft_args.num_train_epochs, sft_args.max_steps, sft_args.max_length
    # TRL cuts each example at max_length, except when packing keeps the overflow (bfd_split, wrapped)
    cut = length if not sft_args.packing or sft_args.packing_strategy == "bfd" else None
    if steps > 0:  # max_steps overrides the epochs (TRL); each step: batch x accumulation sequences of <= cut tokens
        work, kind = f"max_steps {steps:,} optimizer steps", "trained, at most"
        tokens = (
            steps * sft_args.per_device_train_batch_size * sft_args.gradient_accumulation_steps * cut if cut else None
        )
    else:
        if sft.data == "gold":
            examples = sizes["train"]
            work, kind = f"{examples:,} examples x {epochs} epoch(s)", "trained"
        else:  # `questions`: the self-data row's, above
            examples = questions * min(sft.self_data.per_question, sft.self_data.samples)
            work, kind = f"<= {examples:,} kept self-data answers x {epochs} epoch(s)", "trained, at most"
        # one GPU; packing puts several examples in one sequence, so fewer steps then
        batch = sft_args.per_device_train_batch_size * sft_args.gradient_accumulation_steps
        work += f" = <= {math.ceil(math.ceil(examples / batch) * epochs):,} optimizer steps of {batch}"
        per_epoch = sft_tokens(config, run, cut)
        if (
            per_epoch is None and cut
        ):  # not counted here (no split or tokenizer): each example as long as TRL lets it be
            per_epoch, kind = examples * cut, f"trained, at most ({FILLED})"
        tokens = per_epoch * epochs if per_epoch else None
    work += f", sequences <= {cut:,} tokens" if cut else ", sequences not cut"
    rows.append(_row("sft", work, tokens, kind, lora_sft(sft_args) if sft.method == "lora" else None))

    ro = config.rollouts
    questions = min(sizes["train"], ro.num_questions or sizes["train"])
    rounds = max(1, config.rl.num_rounds)
    sequences = questions * arms * ro.samples_per_arm
    if config.rl.algorithm in ("dpo", "rft"):
        rows.append(
            _row(
                "collect-rollouts",
                f"{rounds} round(s) x {questions:,} questions x {arms} arms x {ro.samples_per_arm} "
                f"= {rounds * sequences:,} trajectories",
                rounds * sequences * ro.max_new_tokens,
                "generated, at most",
                generation(ro.engine),
                vllm_peak(ro.engine, ro.vllm),
            )
        )
    rl = config.rl
    if rl.algorithm == "dpo":
        pairs = rounds * questions * config.preferences.max_pairs_per_question
        length = rl_args.max_length
        batch = rl_args.per_device_train_batch_size * rl_args.gradient_accumulation_steps  # one GPU
        if rl_args.max_steps > 0:  # max_steps overrides the epochs (TRL)
            seen = rounds * rl_args.max_steps * batch
            work = f"{rounds} round(s) x max_steps {rl_args.max_steps:,} optimizer steps of {batch} pairs, "
        else:
            seen = math.ceil(pairs * rl_args.num_train_epochs)
            steps = rounds * math.ceil(math.ceil(pairs / rounds / batch) * rl_args.num_train_epochs)
            work = f"<= {pairs:,} pairs x {rl_args.num_train_epochs} epoch(s) = <= {steps:,} optimizer steps of {batch} pairs, "
        rows.append(
            _row(
                "train-rl (DPO)",
                work + (f"chosen + rejected <= {length:,} tokens each" if length else "sequences not cut"),
                2 * seen * length if length else None,
                "trained, at most",
                rate("dpo"),
            )
        )
    elif rl.algorithm == "rft":
        # each round trains on its own rollouts' distinct correct trajectories, at most rft_per_question per question
        examples = questions * min(rl.rft_per_question, arms * ro.samples_per_arm)
        batch = rl_args.per_device_train_batch_size * rl_args.gradient_accumulation_steps  # one GPU
        epochs, length = rl_args.num_train_epochs, rl_args.max_length
        if rl_args.max_steps > 0:  # max_steps overrides the epochs (TRL)
            steps, sequences = rl_args.max_steps, rl_args.max_steps * batch
            work = f"{rounds} round(s) x max_steps {steps:,} optimizer steps of {batch} trajectories"
        else:
            steps, sequences = math.ceil(math.ceil(examples / batch) * epochs), math.ceil(examples * epochs)
            work = (
                f"{rounds} round(s) x <= {examples:,} correct trajectories x {epochs} epoch(s) "
                f"= <= {rounds * steps:,} optimizer steps"
            )
        work += f", sequences <= {length:,} tokens" if length else ", sequences not cut"
        rows.append(
            _row(
                "train-rl (RFT)",
                work,
                rounds * sequences * length if length else None,
                "trained, at most",
                lora_sft(rl_args),
            )
        )
    elif rl.algorithm in ("grpo", "rloo"):
        q = min(sizes["train"], rl.num_questions or sizes["train"])
        # TRL: an optimizer step takes per_device_train_batch_size x gradient_accumulation_steps completions (one
        # GPU), each generation used num_iterations times; max_steps, when set, decides how many are generated
        batch = rl_args.per_device_train_batch_size * rl_args.gradient_accumulation_steps
        reuse = getattr(rl_args, "num_iterations", 1)
        if rl_args.max_steps > 0:
            completions = math.ceil(rl_args.max_steps * batch / reuse)
            work = (
                f"max_steps {rl_args.max_steps:,} optimizer steps of {batch} completions -> {completions:,} completions"
            )
        else:
            completions = math.ceil(
                q * rl_args.num_generations * (arms if rl.mix_arms else 1) * rl_args.num_train_epochs
            )
            steps = math.ceil(completions * reuse / batch)
            work = (
                f"{q:,} questions x {rl_args.num_train_epochs} epoch(s) -> {completions:,} completions "
                f"= {steps:,} optimizer steps of {batch}"
            )
        rows.append(
            _row(
                f"train-rl ({rl.algorithm.upper()})",
                work,
                completions * rl_args.max_completion_length,
                "generated, at most",
                rate(f"{rl.algorithm}:{'vllm' if rl_args.use_vllm else 'hf'}"),
            )
        )
    ev = config.eval
    unknown = [d for d in ev.datasets if d not in DATASETS]
    if unknown:
        raise ConfigValueError(
            f"eval.datasets: unknown dataset {unknown[0]!r}; known: {', '.join(DATASETS)}", fields=("eval.datasets",)
        )
    names = {
        "gsm8k_dev": "dev",
        "gsm8k_test": "test",
        "gsm_symbolic_dev": "dev",
        "gsm_symbolic_test": "test",
        "gsm8k_platinum": "platinum_test",
    }
    questions = sum(min(sizes.get(names.get(d, ""), 0), ev.limit or 10**9) for d in ev.datasets)
    answers = len(ev.models) * questions * ev.samples
    rows.append(
        _row(
            "eval",
            f"{len(ev.models)} models x {questions:,} questions x {ev.samples} = {answers:,} answers",
            answers * ev.max_new_tokens,
            "generated, at most",
            generation(ev.engine),
            vllm_peak(ev.engine, ev.vllm),
        )
    )
    return rows


def render(config: RunConfig) -> str:
    rows = plan_rows(config)
    arch = architecture(config.model.name_or_path)
    gpu = measured_on(arch)
    lines = [
        f"plan for {config.name}: {config.model.name_or_path} (measured architecture: {arch or 'none'})",
        "",
        f"| stage | work | tokens | minutes on one {gpu} | peak GiB | rate used (tokens/s, measured at; docs/bench/) |",
        "|---|---|---:|---:|---:|---|",
    ]
    total = 0.0
    for r in rows:
        rate = r["rate"]
        tokens = f"{r['tokens']:,.0f} {r['kind']}" if r["tokens"] else "-"
        minutes = _minutes(r["tokens"], rate) if r["tokens"] else "-"
        if rate and r["tokens"]:
            total += r["tokens"] / rate.tokens_per_s / 60
        used = f"{rate.tokens_per_s:,.0f}: {rate.measured} ({rate.source})" if rate else "not measured"
        peak = r["peak"] or (f"{rate.peak_gib:.1f}" if rate and rate.peak_gib else "-")
        lines.append(f"| {r['stage']} | {r['work']} | {tokens} | {minutes} | {peak} | {used} |")
    priced = [r["stage"] for r in rows if r["rate"] and r["tokens"]]
    unpriced = [r["stage"] for r in rows if r["stage"] not in priced]
    shorter = [r["stage"] for r in rows if r["stage"] in priced and not r["rate"].upper_bound]
    hours = "Under 0.1" if total / 60 < 0.05 else f"{'About' if shorter else 'At most'} {total / 60:,.1f}"
    lines += [
        "",
        f"{hours} GPU-hours on one {gpu} for {len(priced)} of {len(rows)} stages "
        f"({', '.join(priced) or 'none'}: generation to every limit"
        + "".join(
            f", {kind} as if every sequence filled its max_length"
            for kind in ("DPO", "RFT")
            if any(r["stage"] == f"train-rl ({kind})" for r in rows)
        )
        + (
            ", SFT as if every example filled its max_length (not counted: that needs the prepared train split "
            "and the model's tokenizer on this machine)"
            if any(FILLED in r["kind"] for r in rows)
            else ""
        )
        + (
            f"; {', '.join(shorter)} at a rate measured at shorter answers than the stage's limit, which "
            "decode faster per token: '~', not a bound"
            if shorter
            else ""
        )
        + ")"
        + (
            f"; not priced: {', '.join(unpriced)} (no comparable measured rate"
            + (
                ", or SFT's tokens not counted: that needs the prepared train split (`looper prepare-data`) and the "
                "model's tokenizer on this machine (nothing is downloaded), or under max_steps a max_length"
                if any(r["stage"] == "sft" and not r["tokens"] for r in rows)
                else ""
            )
            + ")"
            if unpriced
            else ""
        )
        + ". Not counted: loading each model, and each vLLM engine's start (compile, CUDA graphs, memory "
        "profiling: about a minute or more per model and stage). Rates: docs/benchmarks.md.",
    ]
    if not priced:  # a "0 of N stages" total says nothing: say why instead
        measured = ", ".join(sorted({a for a, _ in RATES}))
        lines[-1] = (
            f"No stage priced: no rate was measured on one GPU for this model's architecture "
            f"({arch or 'not one looper plan knows'}; measured: {measured}), so only the work is shown. "
            "Rates: docs/benchmarks.md."
        )
    return "\n".join(lines)


def main(config: RunConfig) -> None:
    print(render(config))
