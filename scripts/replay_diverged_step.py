"""Replay a training step that produced non-finite gradients, to find the operation that made them.

    python scripts/replay_diverged_step.py configs/smollm2-135m-gpu.yaml <overrides...> \
        --dump runs/<name>/work/train-rl/diverged_step290.pt [--round K]

When a training stage stops on non-finite gradients (``looper.trainers.watch_gradients``) it saves the step's
micro-batches as the loss saw them and the trainable weights before the step. This rebuilds the stage's trainer from
the same config and run folder (train-rl; ``--stage sft`` for SFT), loads those weights, and runs each micro-batch
through the trainer's own loss, forward and backward, with PyTorch's anomaly detection: it prints the first module
whose output is not finite, the loss, and the backward operation that first produced a NaN, if any. A step that
replays finite points at state the dump does not hold (optimizer moments, random dropout masks) or at the device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch


def build_trainer(config: Any, stage: str, round_: int) -> Any:
    from looper.runs import RunDir

    run = RunDir.of(config)
    run = run.round(round_) if round_ > 1 else run
    from looper.trainers import make_trl_config

    if stage == "train-rl":
        from looper.rl_training.train_rl import PREPARE

        args = make_trl_config(config.rl.algorithm, config, run.work_dir(stage))
        trainer_cls, kwargs = PREPARE[config.rl.algorithm](config, run, args)
        return trainer_cls(**kwargs)
    from trl import SFTTrainer

    from looper.baseline_sft.train_sft import build_dataset
    from looper.modeling import load_model, load_tokenizer, lora_config

    model = load_model(config.model)
    peft = lora_config(config.sft.lora_preset, config.sft.lora, model) if config.sft.method == "lora" else None
    return SFTTrainer(
        model=model,
        args=make_trl_config("sft", config, run.work_dir("sft")),
        peft_config=peft,
        train_dataset=build_dataset(config, run),
        processing_class=load_tokenizer(config.model),
    )


def first_non_finite_module(model: torch.nn.Module) -> tuple[list[str], Any]:
    """Forward hooks that note, in execution order, the modules whose output holds a non-finite value."""
    seen: list[str] = []

    def hook(name: str):
        def check(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) else getattr(output, "logits", output)
            if isinstance(out, torch.Tensor) and out.is_floating_point() and not torch.isfinite(out).all():
                seen.append(f"{name} ({type(module).__name__}, {int((~torch.isfinite(out)).sum())} non-finite values)")

        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    return seen, handles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="key=value, as the run was made")
    parser.add_argument("--dump", required=True, help="the diverged_step<N>.pt file")
    parser.add_argument("--stage", choices=["train-rl", "sft"], default="train-rl")
    parser.add_argument("--round", type=int, default=1, help="train-rl round the dump comes from")
    parser.add_argument(
        "--cudnn-attention",
        action="store_true",
        help="let sdpa use PyTorch's cuDNN backend, as looper did before avoid_cudnn_attention (to see "
        "the NaN it made); by default the replay trains as looper's stages do, without it",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from looper.config import load_config
    from looper.trainers import avoid_cudnn_attention, map_tensors

    config = load_config(args.config, args.overrides)
    dump = torch.load(args.dump, weights_only=False)
    trainer = build_trainer(config, args.stage, args.round)
    avoid_cudnn_attention()
    if args.cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(True)
    print(
        f"sdpa backends: cudnn {torch.backends.cuda.cudnn_sdp_enabled()}, flash {torch.backends.cuda.flash_sdp_enabled()}, "
        f"memory-efficient {torch.backends.cuda.mem_efficient_sdp_enabled()}"
    )
    model = trainer.model
    result = model.load_state_dict(dump["trainable"], strict=False)
    if result.unexpected_keys:
        raise SystemExit(
            f"{args.dump}: weights {result.unexpected_keys[:3]} are not in this trainer's model: "
            "replay with the config and overrides the run was made with"
        )
    model.train()
    if not hasattr(trainer, "current_gradient_accumulation_steps"):  # set by the training loop, read by some losses
        trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
    device = next(model.parameters()).device
    print(
        f"step {dump['step']}: {len(dump['micro_batches'])} micro-batch(es), {len(dump['trainable'])} trainable tensors "
        f"loaded, on {device}"
    )
    reproduced = False
    for i, micro in enumerate(dump["micro_batches"], 1):
        inputs, kwargs = (map_tensors(micro[k], lambda t: t.to(device)) for k in ("inputs", "kwargs"))
        shapes = {k: tuple(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        print(f"\nmicro-batch {i}: {shapes}")
        if "advantages" in inputs:
            adv = inputs["advantages"].float()
            print(
                f"  advantages: min {adv.min():.4g} max {adv.max():.4g}, {int((adv == 0).sum())} of {adv.numel()} zero"
            )
        if "completion_mask" in inputs:
            lengths = inputs["completion_mask"].sum(-1)
            print(f"  completion tokens per row: min {int(lengths.min())} max {int(lengths.max())}")
        model.zero_grad()
        seen, handles = first_non_finite_module(model)
        try:
            with torch.autograd.detect_anomaly(check_nan=True):
                loss = trainer.compute_loss(model, inputs, *micro.get("args", ()), **kwargs)
                loss = loss[0] if isinstance(loss, tuple) else loss
                print(f"  loss {loss.item():.6g}" + ("" if torch.isfinite(loss) else "  <- not finite"))
                if seen:
                    print(
                        f"  first non-finite module output: {seen[0]}"
                        + (f" (then {len(seen) - 1} more)" if len(seen) > 1 else "")
                    )
                loss.backward()
        except torch.OutOfMemoryError as err:  # anomaly detection's copies (or eager attention) did not fit: no verdict
            print(f"  out of memory, no verdict: {str(err).splitlines()[0][:120]}")
            continue
        except RuntimeError as err:  # anomaly detection names the backward function that produced the NaN
            reproduced = True
            print(f"  backward: {str(err).splitlines()[0]}")
        finally:
            for h in handles:
                h.remove()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
        bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
        reproduced |= bool(bad) or bool(seen)
        print(f"  gradients: {len(bad)} non-finite tensors" + (f", first {bad[0]}" if bad else ""))
        if bad:  # NaN (an undefined operation) and inf (an overflow) point at different causes
            nan = sum(int(torch.isnan(grads[n]).sum()) for n in bad)
            inf = sum(int(torch.isinf(grads[n]).sum()) for n in bad)
            print(
                f"  non-finite values: {nan} NaN, {inf} inf; layers: {sorted({n.split('.layers.')[1].split('.')[0] for n in bad if '.layers.' in n}, key=int)}"
            )
        finite = [g[torch.isfinite(g)].abs().max() for g in grads.values() if torch.isfinite(g).any()]
        if finite:
            print(f"  largest finite |gradient|: {float(torch.stack(finite).max()):.4g}")
    print("\nreproduced" if reproduced else "\nnot reproduced: every micro-batch gives finite loss and gradients here")


if __name__ == "__main__":
    main()
