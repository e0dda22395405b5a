"""Training methods: one small module per method, listed in an explicit registry."""

from __future__ import annotations

from tunelab.errors import ConfigError

# name -> "module:Class"; imported lazily so that `tunelab plan` never imports torch.
METHODS: dict[str, str] = {
    "sft": "tunelab.methods.sft:SFT",
    "dpo": "tunelab.methods.preference:DPO",
    "simpo": "tunelab.methods.preference:SimPO",
    "orpo": "tunelab.methods.preference:ORPO",
    "kto": "tunelab.methods.kto:KTO",
    "reward": "tunelab.methods.reward:RewardModel",
    "ppo": "tunelab.methods.ppo:PPO",
}


def get_method(name: str):
    """The Method class registered as ``name``."""
    import importlib

    if name not in METHODS:
        raise ConfigError(f"method: unknown method '{name}'. Valid methods: {', '.join(sorted(METHODS))}")
    module_name, cls_name = METHODS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)
