"""eval on GSM8K-Platinum (the plan's script name, docs/plan.md §7): the eval stage restricted to the cleaned test set.

    python -m looper.eval.eval_platinum configs/r1-distill-llama-8b.yaml

Needs ``data.platinum.source`` (hub or local) so that prepare-data wrote ``data/gsm8k_platinum_test.jsonl``;
its ``cleaning_status`` column is kept in the per-sample output.
"""

from __future__ import annotations

import dataclasses

from looper.config import RunConfig
from looper.eval import eval_gsm8k


def main(config: RunConfig):
    return eval_gsm8k.main(
        dataclasses.replace(config, eval=dataclasses.replace(config.eval, datasets=["gsm8k_platinum"]))
    )


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "eval")
