"""Run folders: every stage reads explicit paths and writes here, atomically or one whole record at a time.

Layout of ``runs/<name>/`` (file names from the original plan)::

    config.yaml                 resolved config of the last stage run
    manifest.json               library versions, git commit, device
    data/<data>_{train,dev,test}.jsonl    <data> = gsm8k, or gsm_symbolic for generated problems
    data/gsm8k_platinum_test.jsonl
    checkpoints/lora_sft/       SFT adapter + tokenizer (checkpoints/sft for full SFT)
    checkpoints/lora_rl/        RL adapter + tokenizer
    data/sft_self_samples.jsonl the base model's own samples of the train questions (sft.data: self)
    data/rl_rollouts.jsonl      one record per question, appended whole
    data/preferences.jsonl
    eval/                       per-sample JSONL, summary.json, report.md, plots
    logs/<stage>.jsonl          metrics
    stages/<stage>.json         completion marker with the settings it was made with (``settings_record``)
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from looper.errors import InputError
from looper.files import atomic_write_json, atomic_write_text, read_jsonl
from looper.processes import is_main_process

log = logging.getLogger("looper")

STAGES = ("prepare-data", "sft", "collect-rollouts", "build-preferences", "train-rl", "eval")
# Where each stage's ``main(config)`` lives (imported by name, so this module imports no stage).
STAGE_MODULES = {
    "prepare-data": "looper.baseline_sft.prepare_data",
    "sft": "looper.baseline_sft.train_sft",
    "collect-rollouts": "looper.rl_training.collect_rollouts",
    "build-preferences": "looper.rl_training.build_preferences",
    "train-rl": "looper.rl_training.train_rl",
    "eval": "looper.eval.eval_gsm8k",
}
# The config sections each stage's outputs depend on, its own and every upstream stage's: a change
# anywhere upstream makes the outputs stale.
STAGE_SECTIONS = {
    "prepare-data": ("seed", "data"),
    "sft": ("seed", "data", "model", "sft"),
    "collect-rollouts": ("seed", "data", "model", "sft", "rollouts", "regime_w"),
    "build-preferences": ("seed", "data", "model", "sft", "rollouts", "regime_w", "preferences"),
    "train-rl": ("seed", "data", "model", "sft", "rollouts", "regime_w", "preferences", "rl"),
    "eval": ("seed", "data", "model", "sft", "rollouts", "regime_w", "preferences", "rl", "eval"),
}


# ----------------------------------------------------------------------------- run folder


class RunDir:
    """Paths of one run folder. Data files are named for what they hold (the plan's ``gsm8k_train.jsonl``
    for GSM8K, docs/plan.md §1; ``gsm_symbolic_train.jsonl`` for generated problems).

    A round k > 1 of iterative RL (``rl.rounds``) is a RunDir of its own under ``rounds/<k>/``: its
    rollouts, pairs, RL adapter, logs and stage markers are there, its data splits are the run's, and
    the policy it starts from (what its rollouts sample and its training continues) is round k-1's RL
    adapter, in the place of the SFT adapter."""

    def __init__(
        self, root: Path | str, data_name: str, data_root: Path | str | None = None, start: Path | None = None
    ):
        self.root = Path(root)
        self.data_name = data_name  # gsm8k or gsm_symbolic (DataConfig.name)
        self.data_root = Path(data_root) if data_root is not None else self.root
        self.start = start  # a round's starting adapter; None: the run's own SFT output

    @classmethod
    def of(cls, config: Any) -> RunDir:
        return cls(config.run_dir, config.data.name)

    def round(self, k: int) -> RunDir:
        """Round k of iterative RL (round 1 is the run folder itself)."""
        if k <= 1:
            return self
        return RunDir(self.data_root / "rounds" / str(k), self.data_name, self.data_root, self.round(k - 1).lora_rl)

    def split(self, split: str) -> Path:
        return self.data_root / "data" / f"{self.data_name}_{split}.jsonl"

    train = property(lambda self: self.split("train"))
    dev = property(lambda self: self.split("dev"))
    test = property(lambda self: self.split("test"))
    platinum = property(lambda self: self.data_root / "data" / "gsm8k_platinum_test.jsonl")
    data_info = property(lambda self: self.data_root / "data" / "prepare_data.json")
    lora_sft = property(lambda self: self.start or self.root / "checkpoints" / "lora_sft")
    full_sft = property(lambda self: self.root / "checkpoints" / "sft")
    lora_rl = property(lambda self: self.root / "checkpoints" / "lora_rl")
    rollouts = property(lambda self: self.root / "data" / "rl_rollouts.jsonl")
    sft_self_samples = property(lambda self: self.root / "data" / "sft_self_samples.jsonl")
    preferences = property(lambda self: self.root / "data" / "preferences.jsonl")
    eval_dir = property(lambda self: self.root / "eval")

    def log_path(self, stage: str) -> Path:
        return self.root / "logs" / f"{stage}.jsonl"

    def marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def work_dir(self, stage: str) -> Path:
        """Scratch space of a stage (trainer checkpoints for resuming); outputs go elsewhere."""
        return self.root / "work" / stage

    def outputs(self, stage: str) -> list[Path]:
        """The files and folders ``stage`` writes that exist now (besides its marker, log and work folder): what to
        delete to redo it."""
        made = {
            "prepare-data": [self.train, self.dev, self.test, self.platinum, self.data_info],
            "sft": [self.lora_sft, self.full_sft, self.sft_self_samples, record_path(self.sft_self_samples)],
            "collect-rollouts": [self.rollouts, record_path(self.rollouts)],
            "build-preferences": [self.preferences],
            "train-rl": [self.lora_rl, self.data_root / "rounds"],
            "eval": [self.eval_dir],
        }[stage]
        return [path for path in made if path.exists()]


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in (
        "looper",
        "torch",
        "transformers",
        "trl",
        "peft",
        "datasets",
        "accelerate",
        "bitsandbytes",
        "reasoning-gym",
        "gguf",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def start_stage(config: Any, stage: str, run: RunDir | None = None) -> RunDir:
    """Create the run folder (or a round's), write the resolved config and manifest, log the stage start
    (the first process only, under a multi-process launch)."""
    run = run or RunDir.of(config)
    if not is_main_process():
        return run
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.root / "config.yaml", config.to_yaml())
    manifest_path = run.root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        # it only logs each stage's start and versions, so a damaged one is kept aside and a new one begun
        damaged = manifest_path.with_suffix(".json.damaged")
        manifest_path.replace(damaged)
        print(
            f"warning: {manifest_path}: not valid JSON ({err}); moved to {damaged.name}, a new one begun",
            file=sys.stderr,
        )
        manifest = {}
    manifest.setdefault("stages", {})[stage] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "argv": sys.argv,
        "host": platform.node(),
    }
    atomic_write_json(manifest_path, manifest)
    return run


def stage_hash(config: Any, stage: str) -> str:
    return settings_record(stage_sections(config, stage))["config_hash"]


# ----------------------------------------------------------------------------- what an output was made with
# Every output looper reuses or resumes carries one record of the result-changing settings it was made with (their
# hash and the settings themselves), and one function compares it with the settings now: the stage markers
# (stages/<stage>.json), the rollouts' and self samples' .meta.json, each eval file's .meta.json, a trainer work
# folder's looper_settings.json and an adapter's looper_adapter.json.


def settings_record(sections: dict[str, Any]) -> dict[str, Any]:
    """``{"config_hash": ..., "config": sections}``: what to store beside or inside an output."""
    from looper.config import stable_hash

    return {"config_hash": stable_hash(sections), "config": sections}


def changed_settings(record: dict[str, Any] | None, sections: dict[str, Any]) -> list[str] | None:
    """What differs between the settings an output was made with (its ``record``) and ``sections``: None when there
    is no record, [] when they agree, else ``"key: old -> new"`` per changed key (``"unknown keys"`` for a record
    that kept only a hash; a null value shows as ``unset``). A key that a record holds but that is no longer classed
    as result-changing is left out."""
    from looper.config import is_result_field

    if record is None:
        return None
    now = settings_record(sections)
    if record.get("config_hash") == now["config_hash"]:
        return []
    if "config" not in record:
        return ["unknown keys"]
    old = {k: v for k, v in _flatten(record["config"]).items() if is_result_field(k)}
    new = _flatten(sections)

    def shown(value: Any) -> str:  # a null field takes its default (a LoRA field: the preset's), so "unset", not None
        return "unset" if value is None else repr(value)

    return [
        f"{k}: {shown(old.get(k))} -> {shown(new.get(k))}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


def made_with(output: Path | str, record: dict[str, Any] | None, sections: dict[str, Any], remedy: str) -> bool:
    """True when ``output`` was made with ``sections``, False when it has no record yet; otherwise an InputError
    naming the output, what changed and what to do (``remedy``)."""
    changed = changed_settings(record, sections)
    if changed:
        raise InputError(f"{output}: made with other settings ({'; '.join(changed[:8])}); {remedy}")
    return changed is not None


def record_path(output: Path) -> Path:
    """Where the settings record of an output file (rollouts, self samples, an eval file) is kept: beside it, as
    ``<stem>.meta.json``."""
    return Path(output).with_suffix(".meta.json")


def read_record(path: Path) -> dict[str, Any] | None:
    """The settings record stored at ``path`` (a JSON file: a stage marker, an output's ``.meta.json``), or None when
    there is none.

    Raises:
        InputError: the file is not a JSON object (looper writes records atomically, so it was edited or damaged).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a valid settings record ({err}); delete it to redo what it records") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: not a valid settings record (not a JSON object); delete it to redo what it records")
    return record


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def stage_sections(config: Any, stage: str) -> dict[str, Any]:
    """The config a stage's outputs depend on. ``rl.rounds`` says how many rounds run, not what one round
    makes, so a round's training outputs do not depend on it (a run extended from 2 to 3 rounds keeps
    rounds 1-2); eval does, and tells the rounds' adapters apart by the round each records."""
    from looper.config import result_fields

    everything = config.to_dict()
    sections = result_fields({s: everything[s] for s in STAGE_SECTIONS[stage]})
    if stage != "eval" and "rl" in sections:
        sections["rl"] = {k: v for k, v in sections["rl"].items() if k != "rounds"}
    if stage == "sft" and everything["sft"]["data"] == "self":
        sections |= self_sampling_sections(everything)
    return sections


def self_sampling_sections(everything: dict[str, Any]) -> dict[str, Any]:
    """The settings outside ``sft`` that ``sft.data: self`` samples with: the rollouts' engine and seeding, which
    draw the answers, and ``regime_w.answer_mode``, which decides the correct ones SFT keeps."""
    from looper.config import result_fields

    return result_fields(
        {
            "rollouts": {k: everything["rollouts"][k] for k in ("engine", "seeded")},
            "regime_w": {"answer_mode": everything["regime_w"]["answer_mode"]},
        }
    )


def finish_stage(run: RunDir, stage: str, config: Any, **info: Any) -> None:
    """Mark a stage complete for this config (later runs skip it, or refuse a different config); the first
    process only, under a multi-process launch."""
    if not is_main_process():
        return
    record = settings_record(stage_sections(config, stage))
    atomic_write_json(
        run.marker(stage),
        {
            "config_hash": record["config_hash"],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **info,
            "config": record["config"],
        },
    )


def check_stage(run: RunDir, stage: str, config: Any) -> bool:
    """True when the stage is complete for this config; an InputError naming the differing keys when its
    outputs were made by another config; False when it has not finished (it runs, or resumes)."""
    outputs = " ".join(str(path.relative_to(run.root)) for path in run.outputs(stage) if path.is_relative_to(run.root))
    return made_with(
        run.marker(stage),
        stage_marker(run, stage),
        stage_sections(config, stage),
        f"use another run name, or delete it and the {stage} stage's outputs"
        f"{f' ({outputs}, in {run.root})' if outputs else ''} to redo it",
    )


class Stage:
    """One stage's record keeping on a run folder, entered once by the stage: whether it is complete for this config
    (``done``: its marker, ``stages/<name>.json``, holds these settings; another config's is refused), the record of
    its start (``start``: the resolved config and the manifest's entry, the first time the stage writes) and of its
    finish (``finish``: the marker, with what the stage reports). ``output``: what the stage makes, named when it is
    complete. ``trainers.TrainingStage`` adds what a training stage needs."""

    redo_hint = ""  # said after "nothing to do": how to make the stage run again

    def __init__(
        self,
        config: Any,
        name: str,
        run: RunDir | None = None,
        output: Path | None = None,
        label: str | None = None,
        needs: tuple[Path, ...] | None = None,
    ):
        self.config, self.name, self.run = config, name, run or RunDir.of(config)
        self.output, self.label = output, label or name
        # what must still exist for the stage to count as done (default: its output)
        self.needs = needs if needs is not None else ((output,) if output is not None else ())
        self.settings = stage_sections(config, name)

    def done(self) -> bool:
        """Whether the stage finished for this config and its outputs are still there; says so when it did. A marker
        whose output was deleted is withdrawn and the stage runs again (a later kill then cannot leave a marker over a
        partial output). Raises InputError: its marker was made with other settings (``check_stage``)."""
        if not check_stage(self.run, self.name, self.config):
            return False
        gone = [path for path in self.needs if not path.exists()]
        if gone:
            print(f"{self.label}: {gone[0]} is gone; making it again")
            self.run.marker(self.name).unlink(missing_ok=True)
            return False
        print(
            f"{self.label}: {self.output or self.run.root} is complete for this config; nothing to do{self.redo_hint}"
        )
        return True

    def start(self) -> RunDir:
        """Record the stage's start in the run folder (the first process only); the stage's first write."""
        self.run = start_stage(self.config, self.name, self.run)
        return self.run

    def finish(self, **info: Any) -> None:
        """Mark the stage complete for this config, with ``info`` (counts, speeds) in its marker."""
        finish_stage(self.run, self.name, self.config, **info)


class ResumableOutput:
    """A JSONL output made one record per question over a long run (collect-rollouts' rollouts, sft's self samples):
    each process appends to its own shard (``processes.Shards``; with one process the shard is the file), and the
    settings record beside it (``record_path``) holds the settings that began it. A killed run resumes under those
    settings; other settings are refused naming what changed; ``finish`` merges the shards in question order and
    marks the record complete, so a run stopped after the merge does not sample again.

    Usage: ``out.check()`` before anything is written; ``out.complete`` -> ``out.records()``; else
    ``path = out.begin()``, append to ``path``, then ``records = out.finish(ids)`` (every process calls it).
    """

    def __init__(self, path: Path, settings: dict[str, Any], shards: Any):
        self.path, self.settings, self.shards = Path(path), settings, shards
        self.record_file = record_path(self.path)
        self._record: dict[str, Any] | None = None

    def check(self) -> None:
        """Read the record; an InputError when the output (or a shard of it) was begun with other settings."""
        self._record = read_record(self.record_file)
        shards = self.path.parent.glob(f"{self.path.stem}.shard*")
        if self.path.exists() or any(shards):
            made_with(
                self.path,
                self._record,
                self.settings,
                f"delete it, its shards and {self.record_file.name} to start over",
            )

    @property
    def complete(self) -> bool:
        """Whether every shard was merged into the output under these settings (``check`` first)."""
        return self.path.exists() and bool((self._record or {}).get("complete"))

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def begin(self) -> Path:
        """Record the settings (the first process) and return the file this process appends to."""
        if self.shards.is_main:
            atomic_write_json(self.record_file, settings_record(self.settings))
        return self.shards.path(self.path)

    def finish(self, order: list[Any]) -> list[dict[str, Any]]:
        """Every process: wait for all, then the first merges the shards in ``order`` of their ids (refusing a
        duplicate or a missing one, ``Shards.merge``) and marks the record complete. Returns the records (the
        first process; the others get an empty list)."""
        self.shards.wait()
        records: list[dict[str, Any]] = []
        if self.shards.is_main:
            records = self.shards.merge(self.path, order)
            atomic_write_json(self.record_file, {**settings_record(self.settings), "complete": True})
        self.shards.wait()
        return records


def stage_marker(run: RunDir, stage: str) -> dict[str, Any] | None:
    """The stage's marker (``stages/<stage>.json``), None before the stage has finished; see ``read_record``."""
    return read_record(run.marker(stage))
