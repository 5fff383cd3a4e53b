"""The ``looper`` command: one subcommand per stage, each ``looper STAGE CONFIG [key=value ...]``.

    looper prepare-data configs/demo.yaml
    looper sft configs/demo.yaml sft.trainer.max_steps=20
    looper pipeline configs/demo.yaml --from sft --to eval

This module only dispatches: each stage's ``main(config)`` lives in its folder, and what every
command shares (one-line errors, the run-folder lock) lives in ``looper.entrypoint``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from typing import Any

from looper.config import load_config
from looper.entrypoint import (
    ArgumentParser,
    add_config_args,
    load_and_lock,
    run_or_fail,
    setup_logging,
)
from looper.runs import STAGE_MODULES, STAGES

HELP = {
    "prepare-data": "GSM8K train -> train/dev 80/20 + test (Hub, local file, or offline gsm_symbolic)",
    "sft": "LoRA / QLoRA (or full) supervised fine-tuning with TRL's SFTTrainer",
    "collect-rollouts": "sample every Regime W arm on training questions, score them",
    "build-preferences": "best vs worst trajectory per question -> chosen/rejected pairs",
    "train-rl": "DPO on the pairs, or online GRPO / RLOO with the Regime W reward",
    "eval": "base vs SFT vs RL on GSM8K dev/test, GSM8K-Platinum, gsm_symbolic; report.md",
}


def versions() -> str:
    """looper's version and those of the libraries its results depend on (as installed; "-" where absent): the
    line a bug report needs, read from the packages' metadata without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    libs = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "vllm", "bitsandbytes")
    return f"looper {installed('looper')} ({', '.join(f'{n} {installed(n)}' for n in libs)}; python {sys.version.split()[0]})"


class _PrintVersions(argparse.Action):
    """``--version``: ``versions()`` read only when asked for, not on every command's start."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(versions())
        parser.exit()


def _command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose one line of help is also its description: ``looper --help`` lists it and
    ``looper NAME --help`` opens with it (argparse shows ``help=`` only in the parent's listing)."""
    return sub.add_parser(name, help=help, description=help)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="looper",
        description="Teach a reasoning LLM grade-school math and measure it on a clean benchmark.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_PrintVersions, help="print looper's and its libraries' versions and exit")
    sub = parser.add_subparsers(dest="command", metavar="STAGE", required=True)
    for name in STAGES:
        add_config_args(_command(sub, name, HELP[name]))
    pipeline = _command(sub, "pipeline", "all stages in order on one run folder, skipping finished ones")
    add_config_args(pipeline)
    pipeline.add_argument("--from", dest="from_stage", choices=STAGES, help="first stage to run")
    pipeline.add_argument("--to", dest="to_stage", choices=STAGES, help="last stage to run")
    rw = _command(sub, "regime-w", "Regime W tools: the scoring demo, and a report on saved rollouts")
    rw_sub = rw.add_subparsers(dest="regime_w_command", metavar="TOOL", required=True)
    _command(rw_sub, "demo", "score a hard-coded question's fake arm outputs, print the table")
    report = _command(rw_sub, "report", "re-score saved rollouts: per-arm stats, AUROC, ablations")
    report.add_argument("rollouts", help="a data/rl_rollouts.jsonl file")
    report.add_argument("--config", help="run YAML whose regime_w section to use (default: the defaults)")
    report.add_argument("--out", help="write the report as markdown here too")
    plan = _command(
        sub, "plan", "the work of every stage and its cost on one GPU (measured rates), before anything runs"
    )
    add_config_args(plan)
    ppo = _command(
        sub,
        "train-ppo",
        "the plan's PPO entry: runs TRL's RLOO trainer (PPO-clipped, on-policy), not PPO, with "
        "the Regime W reward (TRL 1.x has no PPO trainer; docs/plan.md §6)",
    )
    add_config_args(ppo)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, ``key=value`` overrides accepted before, between and after options
    (``looper pipeline CONFIG --from sft key=value``), in the order typed (the last one wins).

    argparse reads a command's positionals in one go: the config and the overrides up to the first option, leaving
    later ones over. ``parse_intermixed_args`` would read them too, but refuses a parser with subcommands (a
    TypeError), so the words left over join the overrides of a command that takes them.

    Raises:
        SystemExit: argparse's usage error (status 2) for an unknown option, or words left over by a command that
            takes no overrides.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any(word.startswith("-") for word in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")  # what parse_args says
    if extra:
        args.overrides = [
            *args.overrides,
            *extra,
        ]  # every left-over word comes after the overrides read in the first go
    return args


def main(argv: list[str] | None = None) -> None:
    interrupted = False
    try:
        _dispatch(parse_args(argv))
        sys.stdout.flush()  # a closed pipe then shows here, not in the interpreter's flush at exit
    except BrokenPipeError:
        # whoever read the output stopped early (`looper plan ... | head`): end quietly as Unix tools do, with
        # stdout pointed at /dev/null so the interpreter's final flush cannot raise again (Python docs, "Note on
        # SIGPIPE" in the signal module)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:
        # Ctrl-C: every stage keeps what it finished (markers, per-record outputs, trainer checkpoints), so say how to
        # go on rather than print the traceback of wherever the interrupt landed
        interrupted = True
    if interrupted:
        # outside the handler the interrupted frames are released: their progress bars close (and draw a last
        # time) now, so that this line is the last one; 130 = 128 + SIGINT, as shells report it
        gc.collect()
        print("\nlooper: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)


def _dispatch(args: argparse.Namespace) -> Any:
    setup_logging()
    if args.command == "regime-w":
        if args.regime_w_command == "demo":
            from looper.regime_w.demo import main as demo_main

            return demo_main()
        from looper.regime_w.report import main as report_main

        config = run_or_fail(load_config, args.config) if args.config else None
        return run_or_fail(report_main, args.rollouts, config, args.out, config_file=args.config)
    if args.command == "plan":  # reads the config and the data sizes only: no run-folder lock
        from looper.plan import main as plan_main

        return run_or_fail(
            plan_main,
            run_or_fail(load_config, args.config, args.overrides),
            config_file=args.config,
            overrides=args.overrides,
        )
    config = load_and_lock(args.config, args.overrides, args.command)
    if args.command == "pipeline":
        from looper.pipeline import main as pipeline_main

        return run_or_fail(
            pipeline_main,
            config,
            from_stage=args.from_stage,
            to_stage=args.to_stage,
            config_file=args.config,
            overrides=args.overrides,
        )
    if args.command == "train-ppo":
        from looper.rl_training.train_ppo import main as ppo_main

        return run_or_fail(ppo_main, config, config_file=args.config, overrides=args.overrides)
    return run_or_fail(
        importlib.import_module(STAGE_MODULES[args.command]).main,
        config,
        config_file=args.config,
        overrides=args.overrides,
    )


if __name__ == "__main__":
    main()
