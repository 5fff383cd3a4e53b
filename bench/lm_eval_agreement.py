"""looper's ``eval.protocol: lm-eval`` against lm-evaluation-harness's own command line, question by question.

    looper pipeline configs/demo.yaml name=lm-eval-smollm2 data.source=local data.path=DIR --to sft sft.trainer.max_steps=40
    looper eval configs/demo.yaml name=lm-eval-smollm2 data.source=local data.path=DIR eval.protocol=lm-eval \
        eval.models=[base,sft] eval.datasets=[gsm8k_test] eval.limit=100 eval.batch_size=16
    python bench/lm_eval_agreement.py --gsm8k DIR --run runs/lm-eval-smollm2 --limit 100 --batch 16 --out agreement.json

The reference run is ``lm-eval run --model hf --tasks gsm8k_local``: lm-eval's own ``gsm8k.yaml`` included unchanged
by a task file that only points its data at the local copy (DIR/train.jsonl, DIR/test.jsonl, GSM8K as published),
the adapter through ``peft=``, lm-eval's defaults otherwise (few-shot seed, greedy, 256 tokens), batch size and dtype
as the looper run's config. Per model: both accuracies (strict-match, flexible-extract) and how many questions agree
in prompt (lm-eval's prompt hash), response, extracted answers and score.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, write_results

from looper.config import load_config
from looper.files import read_jsonl
from looper.modeling import resolve_model_path

FILTERS = {"strict": "strict-match", "flexible": "flexible-extract"}


def lm_eval_run(
    gsm8k: Path, pretrained: str, adapter: Path | None, dtype: str, batch: int, limit: int, out: Path
) -> tuple[list[str], dict[int, dict[str, dict]]]:
    """lm-eval's own run of its gsm8k task on the local copy: (command, {doc_id: {filter: logged sample}})."""
    from lm_eval.tasks import TaskManager

    stock = TaskManager().task_index["gsm8k"].yaml_path
    tasks = out / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "gsm8k_local.yaml").write_text(
        f"include: {stock}\ntask: gsm8k_local\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {gsm8k / 'train.jsonl'}\n    test: {gsm8k / 'test.jsonl'}\n"
    )
    model_args = f"pretrained={pretrained},dtype={dtype}" + (f",peft={adapter}" if adapter else "")
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "run",
        "--model",
        "hf",
        "--model_args",
        model_args,
        "--tasks",
        "gsm8k_local",
        "--include_path",
        str(tasks),
        "--limit",
        str(limit),
        "--batch_size",
        str(batch),
        "--log_samples",
        "--output_path",
        str(out / "results"),
    ]
    samples = finished_run(out / "results", limit, batch, dtype, adapter)
    if samples is None:
        subprocess.run(command, check=True)
        samples = max((out / "results").rglob("samples_gsm8k_local_*.jsonl"))
    else:
        print(f"lm-eval's run with these settings is in {samples.parent}: read, not rerun")
    by_doc: dict[int, dict[str, dict]] = {}
    for sample in read_jsonl(samples):
        by_doc.setdefault(sample["doc_id"], {})[sample["filter"]] = sample
    return command, by_doc


def finished_run(results: Path, limit: int, batch: int, dtype: str, adapter: Path | None) -> Path | None:
    """The samples file of an earlier lm-eval run in ``results`` made with the same limit, batch size, dtype and
    adapter (its results file says which), so that a stopped comparison resumes; None if there is none. The base
    model's path is not compared: it names a cache folder of whichever machine ran it."""
    for found in sorted(results.rglob("results_*.json"), reverse=True):
        config = json.loads(found.read_text())["config"]
        args = config["model_args"]
        same = (
            config.get("limit") == limit
            and str(config.get("batch_size")) == str(batch)
            and args.get("dtype") == dtype
            and (Path(args["peft"]).name if args.get("peft") else None) == (adapter.name if adapter else None)
        )
        samples = list(found.parent.glob(f"samples_gsm8k_local_{found.stem.removeprefix('results_')}.jsonl"))
        if same and samples:
            return samples[0]
    return None


def compare(mine: list[dict], theirs: dict[int, dict[str, dict]]) -> dict:
    row = {"questions": len(mine), "lm_eval_questions": len(theirs)}
    for mode, name in FILTERS.items():
        row[f"looper_{name}_%"] = round(100 * sum(r[f"correct_{mode}"] for r in mine) / len(mine), 2)
        row[f"lm_eval_{name}_%"] = round(
            100 * sum(theirs[i][name]["exact_match"] for i in range(len(mine))) / len(mine), 2
        )
        row[f"same_{name}_answer"] = sum(
            r[f"answer_{mode}"]
            == (None if theirs[i][name]["filtered_resps"][0] == "[invalid]" else theirs[i][name]["filtered_resps"][0])
            and r[f"correct_{mode}"] == bool(theirs[i][name]["exact_match"])
            for i, r in enumerate(mine)
        )
    row["same_prompt"] = sum(r["prompt_hash"] == theirs[i]["strict-match"]["prompt_hash"] for i, r in enumerate(mine))
    row["same_response"] = sum(r["output"] == theirs[i]["strict-match"]["resps"][0][0] for i, r in enumerate(mine))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", required=True, type=Path, help="folder with GSM8K train.jsonl and test.jsonl")
    parser.add_argument(
        "--run", required=True, type=Path, help="the looper run folder evaluated with eval.protocol=lm-eval"
    )
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument(
        "--batch", type=int, required=True, help="the looper run's eval.batch_size (lm-eval's batch size)"
    )
    parser.add_argument("--models", default="base,sft", help="comma-separated: base, sft (the run's adapter)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    unknown = set(args.models.split(",")) - {"base", "sft"}
    if unknown:
        parser.error(f"--models: {', '.join(sorted(unknown))} unknown; choose from base, sft")
    config = load_config(args.config)
    pretrained = resolve_model_path(config.model.name_or_path)
    import lm_eval

    results = {"device": {**device_info(), "lm_eval": lm_eval.__version__}, "command": " ".join(sys.argv), "models": {}}
    adapters = {"base": None, "sft": args.run / "checkpoints" / "lora_sft"}
    for which in args.models.split(","):
        adapter = adapters[which]
        mine = read_jsonl(args.run / "eval" / f"{which}__gsm8k_test.jsonl")[: args.limit]
        command, theirs = lm_eval_run(
            args.gsm8k.resolve(),
            pretrained,
            adapter,
            config.model.dtype,
            args.batch,
            args.limit,
            args.run / "lm_eval_reference" / which,
        )
        results["models"][which] = {"lm_eval_command": " ".join(command), **compare(mine, theirs)}
        print(which, json.dumps(results["models"][which], indent=1))
    write_results(args.out, results)


if __name__ == "__main__":
    main()
