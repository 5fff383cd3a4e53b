"""What every command line shares: logging, one-line errors, and the run-folder lock.

Both ``looper STAGE CONFIG`` (``looper.cli``) and ``python -m looper.<stage>.<step> CONFIG`` end
here, so they behave the same: a bad input is one line ``looper: error: ...`` on stderr and exit
status 2, and a second process on a run folder that one is already using is refused.
This module sits below the stages (they import it, it imports none of them).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from looper.config import (
    ConfigError,
    RunConfig,
    dotted_keys,
    load_config,
    parse_overrides,
)
from looper.errors import ConfigValueError, InputError
from looper.processes import is_main_process

# Lock files held by this process, by path: a pipeline runs every stage in one process under one lock.
_HELD_LOCKS: dict[Path, Any] = {}


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("LOOPER_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    # transformers' own "generation flags" chatter is not useful to a looper user
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # nor accelerate's INFO lines (a resumed DPO run printed "The used dataset had no length, returning gathered
    # tensors..." at every logged step)
    logging.getLogger("accelerate").setLevel(logging.WARNING)


def fail(message: str) -> None:
    """Print a user error as one line and exit with status 2."""
    print(f"looper: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def run_or_fail(
    fn: Callable[..., Any],
    *args: Any,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Call ``fn``; a ConfigError or InputError becomes a one-line message and exit status 2.

    ``config_file``, ``overrides``: where the config ``fn`` was given came from. A ConfigError raised after loading
    (a trainer section TRL rejects, a Regime W weight out of range) or a ConfigValueError (a field's value a stage
    refuses) then starts with the file, as ``load_config``'s own errors do (``configs/demo.yaml: rl.dpo.beta: ...``),
    and with the command-line overrides of the fields it is about (its ``fields``: ``configs/demo.yaml with
    rl.dpo.beta=-1: ...``): stages see the loaded config, not where its fields came from.
    """
    try:
        return fn(*args, **kwargs)
    except ConfigError as err:
        fail(f"{_origin(config_file, overrides, err.fields)}: {err}" if config_file else str(err))
    except InputError as err:
        fail(
            f"{_origin(config_file, overrides, err.fields)}: {err}"
            if config_file and isinstance(err, ConfigValueError)
            else str(err)
        )


def _origin(config_file: str, overrides: list[str] | None, fields: tuple[str, ...]) -> str:
    """``config_file``, with the overrides that set ``fields`` (each key's last value): those that set a field, a
    section above one, or a key inside one (``sft=3`` and ``sft.trainer.max_steps=5`` for ``sft.trainer``)."""
    last = {o.split("=", 1)[0]: o for o in overrides or []}
    shown = []
    for override in last.values():
        # the leaves an override sets: `rl.dpo={max_steps: 3}` sets rl.dpo.max_steps, not rl.dpo.beta
        leaves = dotted_keys(parse_overrides([override]))
        if any(
            leaf == field or field.startswith(f"{leaf}.") or leaf.startswith(f"{field}.")
            for leaf in leaves
            for field in fields
        ):
            shown.append(override)
    return f"{config_file} with {' '.join(shown)}" if shown else config_file


def lock_run_folder(config: RunConfig, command: str) -> None:
    """Hold ``<runs_dir>/<name>.lock`` for the rest of this process, or refuse if another process holds it.

    The lock (``flock``) is released by the kernel when the process ends, ``kill -9`` included, so a
    killed run never blocks the next one. The file lies beside the run folder, not in it, and is
    removed when the process exits (with ``runs_dir`` itself if this process made it and it is empty),
    so a refused or failed command leaves the disk as it found it. Under ``accelerate launch`` /
    ``torchrun`` only the job's first process takes it: its other processes share the folder by design.
    """
    if not is_main_process():
        return
    runs_dir = Path(config.runs_dir).resolve()
    path = runs_dir / f"{config.name}.lock"
    if path in _HELD_LOCKS:
        return
    made_runs_dir = not runs_dir.exists()
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, a read-only or special file system
        raise InputError(
            f"runs_dir={config.runs_dir}: cannot make the runs folder {runs_dir} ({err.strerror})"
        ) from None
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            try:
                who = json.loads(holder)
                detail = f"pid {who['pid']}, `looper {who['command']}`, since {who['since']}"
            except (ValueError, KeyError, TypeError):
                detail = "another process"
            raise InputError(
                f"{config.run_dir} is in use by another looper process ({detail}); "
                "wait for it to finish or use another run name"
            ) from None
        # The holder before us may have removed the file between our open and our lock: then we hold
        # a lock on a file nobody else will see. Only a lock on the file at the path counts.
        if path.exists() and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "command": command, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    handle.flush()
    _HELD_LOCKS[path] = handle
    atexit.register(_release, path, runs_dir if made_runs_dir else None)


def _release(path: Path, made_dir: Path | None) -> None:
    handle = _HELD_LOCKS.pop(path, None)
    if handle is None:
        return
    path.unlink(missing_ok=True)  # before unlocking: a waiter then finds the file gone and retries
    handle.close()
    if made_dir is not None:
        with contextlib.suppress(OSError):
            made_dir.rmdir()  # only if empty


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, its usage errors ending in ``looper: error: ...`` under a subcommand too (argparse's own
    line names the subcommand, ``looper sft: error:``, or the module), as every other looper error ends."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"looper: error: {' '.join(message.split())}\n")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run YAML (configs/demo.yaml, ...)")
    # default: without one argparse counts a '*' positional as required and lists it as missing beside the config
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="key=value",
        help="override config fields, e.g. sft.trainer.max_steps=5",
    )


def load_and_lock(config_path: str, overrides: list[str], command: str) -> RunConfig:
    # trainers imports torch: only once a command runs, not for --help
    from looper.trainers import check_trainer_sections

    config = run_or_fail(load_config, config_path, overrides)
    run_or_fail(check_trainer_sections, config, command, config_file=config_path, overrides=overrides)
    run_or_fail(lock_run_folder, config, command)
    return config


def run_stage_command(stage_main: Callable[[RunConfig], Any], doc: str | None, command: str) -> None:
    """``python -m looper.<stage>.<step> CONFIG [key=value ...]``: the same as ``looper COMMAND CONFIG``."""
    parser = ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    add_config_args(parser)
    args = parser.parse_args()
    setup_logging()
    run_or_fail(
        stage_main,
        load_and_lock(args.config, args.overrides, command),
        config_file=args.config,
        overrides=args.overrides,
    )
