"""train-ppo: the plan's PPO entry point (docs/plan.md §6). It runs TRL's RLOO with the Regime W reward.

    looper train-ppo configs/demo.yaml
    python -m looper.rl_training.train_ppo configs/demo.yaml

Which algorithm, and why: the plan names PPO, but TRL (1.x) no longer ships a PPO trainer. Its
maintained on-policy trainers with a reward function are GRPO and RLOO; both optimise PPO's clipped
surrogate objective. RLOO is the closer stand-in for PPO with a learned-free baseline: each
completion's advantage is its reward minus the mean reward of the other completions for the same
prompt (leave-one-out), where PPO would use a value network. No PPO is implemented here from
scratch. This is ``looper train-rl`` with ``rl.algorithm=rloo`` and the ``rl.rloo`` trainer fields.
"""

from __future__ import annotations

import dataclasses

from looper.config import RunConfig
from looper.rl_training import train_rl


def main(config: RunConfig):
    if config.rl.algorithm != "rloo":
        print(
            f"train-ppo: running RLOO (TRL's PPO-clipped on-policy trainer) instead of rl.algorithm={config.rl.algorithm}"
        )
    return train_rl.main(dataclasses.replace(config, rl=dataclasses.replace(config.rl, algorithm="rloo")))


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "train-ppo")
