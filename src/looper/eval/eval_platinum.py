"""eval on GSM8K-Platinum (the plan's script name): the eval stage restricted to the cleaned test set.

    python -m looper.eval.eval_platinum configs/r1-distill-llama-8b.yaml

Needs ``data.platinum.source`` (hub or local) so that prepare-data wrote ``data/platinum_test.jsonl``;
its ``cleaning_status`` column is kept in the per-sample output.
"""

from __future__ import annotations

import dataclasses

from looper.config import RunConfig
from looper.eval import eval_gsm8k


def main(config: RunConfig):
    return eval_gsm8k.main(dataclasses.replace(config, eval=dataclasses.replace(config.eval, datasets=["platinum"])))


if __name__ == "__main__":
    from looper.cli import run_stage_module

    run_stage_module(main, __doc__)
