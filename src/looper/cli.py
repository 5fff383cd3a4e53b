"""The ``looper`` command: one subcommand per stage, each ``looper STAGE CONFIG [key=value ...]``.

    looper prepare-data configs/demo.yaml
    looper sft configs/demo.yaml sft.trainer.max_steps=20
    looper pipeline configs/demo.yaml --from sft --to eval
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from looper.config import ConfigError, load_config
from looper.runs import InputError

# (subcommand, module with main(config), one line for --help)
STAGE_COMMANDS = [
    ("prepare-data", "looper.baseline_sft.prepare_data", "GSM8K train -> train/dev 80/20 + test (Hub, local file, or offline gsm_symbolic)"),
    ("sft", "looper.baseline_sft.train_sft", "LoRA / QLoRA (or full) supervised fine-tuning with TRL's SFTTrainer"),
    ("collect-rollouts", "looper.rl_training.collect_rollouts", "sample every Regime W arm on training questions, score them"),
    ("build-preferences", "looper.rl_training.build_preferences", "best vs worst trajectory per question -> chosen/rejected pairs"),
    ("train-rl", "looper.rl_training.train_rl", "DPO on the pairs, or online GRPO / RLOO with the Regime W reward"),
    ("eval", "looper.eval.eval_gsm8k", "base vs SFT vs RL on GSM8K dev/test, Platinum, gsm_symbolic; report.md"),
    ("pipeline", "looper.pipeline", "all stages in order on one run folder, skipping finished ones"),
]


def _setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("LOOPER_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    # transformers' own "generation flags" chatter is not useful to a looper user
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _fail(message: str) -> None:
    print(f"looper: error: {message}", file=sys.stderr)
    sys.exit(2)


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (InputError, ConfigError) as err:
        _fail(str(err))


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run YAML (configs/demo.yaml, ...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override config fields, e.g. sft.trainer.max_steps=5")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="looper", description="Teach a reasoning LLM grade-school math and prove it on a clean benchmark.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="STAGE", required=True)
    for name, _, help_text in STAGE_COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_config_args(p)
        if name == "pipeline":
            from looper.runs import STAGES

            p.add_argument("--from", dest="from_stage", choices=STAGES, help="first stage to run")
            p.add_argument("--to", dest="to_stage", choices=STAGES, help="last stage to run")
    rw = sub.add_parser("regime-w", help="Regime W tools: the scoring demo, and a report on saved rollouts")
    rw_sub = rw.add_subparsers(dest="regime_w_command", required=True)
    rw_sub.add_parser("demo", help="score a hard-coded question's fake arm outputs, print the table")
    report = rw_sub.add_parser("report", help="re-score saved rollouts: per-arm stats, AUROC, ablations")
    report.add_argument("rollouts", help="a data/rl_rollouts.jsonl file")
    report.add_argument("--config", help="run YAML whose regime_w section to use (default: the defaults)")
    report.add_argument("--out", help="write the report as markdown here too")
    ppo = sub.add_parser("train-ppo", help="the plan's PPO entry: runs TRL's RLOO (PPO-clipped, on-policy) with the Regime W reward")
    _add_config_args(ppo)
    return parser


def main(argv: list[str] | None = None) -> None:
    _dispatch(build_parser().parse_args(argv))


def _dispatch(args: argparse.Namespace) -> Any:
    _setup_logging()
    if args.command == "regime-w":
        if args.regime_w_command == "demo":
            from looper.regime_w.demo import main as demo_main

            return demo_main()
        from looper.regime_w.report import main as report_main

        config = _run(load_config, args.config) if args.config else None
        return _run(report_main, args.rollouts, config, args.out)
    config = _run(load_config, args.config, args.overrides)
    if args.command == "pipeline":
        from looper.pipeline import main as pipeline_main

        return _run(pipeline_main, config, from_stage=args.from_stage, to_stage=args.to_stage)
    if args.command == "train-ppo":
        from looper.rl_training.train_ppo import main as ppo_main

        return _run(ppo_main, config)
    module = dict((n, m) for n, m, _ in STAGE_COMMANDS)[args.command]
    return _run(importlib.import_module(module).main, config)


def run_stage_module(stage_main: Callable[..., Any], doc: str | None) -> None:
    """``python -m looper.<stage>.<step> CONFIG [key=value ...]``: the same as the looper subcommand."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    _add_config_args(parser)
    args = parser.parse_args()
    _setup_logging()
    config = _run(load_config, args.config, args.overrides)
    _run(stage_main, config)


if __name__ == "__main__":
    main()
