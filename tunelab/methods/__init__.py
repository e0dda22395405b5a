"""Training methods: one small module per method, listed in an explicit registry.

:data:`METHODS` maps a method name to its :class:`~tunelab.methods.base.Method` class,
imported lazily so that the config, the planner and ``tunelab config explain`` never import
torch. The typed options of each method (``method_args``) are in :mod:`tunelab.methods.args`
under the same names.
"""

from __future__ import annotations

from tunelab.registry import Registry

#: method name -> Method class ("module:Class", imported on first get).
METHODS: Registry[type] = Registry("method", key="method")
METHODS.lazy("sft", "tunelab.methods.sft:SFT")
METHODS.lazy("dpo", "tunelab.methods.preference:DPO")
METHODS.lazy("simpo", "tunelab.methods.preference:SimPO")
METHODS.lazy("orpo", "tunelab.methods.preference:ORPO")
METHODS.lazy("kto", "tunelab.methods.kto:KTO")
METHODS.lazy("reward", "tunelab.methods.reward:RewardModel")
METHODS.lazy("ppo", "tunelab.methods.ppo:PPO")
METHODS.lazy("distill", "tunelab.methods.distill:Distill")


def get_method(name: str) -> type:
    """The Method class registered as ``name``.

    Raises:
        ConfigError: unknown name (lists the valid ones and the closest).
    """
    return METHODS.get(name)
