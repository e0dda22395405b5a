"""Rule-based rewards for PPO, registered by name (``method_args.reward_function``).

A reward function maps ``(prompt, completion)`` plain texts to a float. Register your own with
:func:`register_reward_function` in Python before calling ``tunelab.train.loop.train``; configs
refer to it by name (no dotted-path imports from config files).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tunelab.registry import Registry

RewardFunction = Callable[[str, str], float]

#: name -> reward function
REWARD_FUNCTIONS: Registry[RewardFunction] = Registry("reward function", key="method_args.reward_function")


def register_reward_function(name: str) -> Callable[[RewardFunction], RewardFunction]:
    """Decorator: make ``fn`` available as ``method_args.reward_function: <name>``.

    Raises:
        DuplicateNameError: ``name`` is already registered (a built-in is never replaced silently).
    """
    return REWARD_FUNCTIONS.register(name)


def get_reward_function(name: str) -> RewardFunction:
    """The reward function registered as ``name``.

    Raises:
        ConfigError: unknown name (lists the registered ones and the closest).
    """
    return REWARD_FUNCTIONS.get(name)


ANSWER_FORMAT = re.compile(r"^Answer: .+", re.DOTALL)
POLITE = ("please", "thank", "happy to help", "glad")


@register_reward_function("answer_format")
def answer_format(prompt: str, completion: str) -> float:
    """1 if the completion starts with ``Answer: `` (the examples' fixed format), else 0."""
    return 1.0 if ANSWER_FORMAT.match(completion.strip()) else 0.0


@register_reward_function("concise")
def concise(prompt: str, completion: str) -> float:
    """1 for an empty completion, falling linearly to 0 at 200 characters."""
    return max(0.0, 1.0 - len(completion.strip()) / 200.0)


@register_reward_function("concise_polite_format")
def concise_polite_format(prompt: str, completion: str) -> float:
    """The examples' preference as a rule: fixed format (1) + politeness (0.5) + brevity (0..0.5)."""
    polite = 0.5 if any(word in completion.lower() for word in POLITE) else 0.0
    return answer_format(prompt, completion) + polite + 0.5 * concise(prompt, completion)
