"""PPO on tiny with a rule-based reward: reward rises, KL stays bounded, resume is exact."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.align.conftest import tiny_config, write_jsonl
from tunelab.methods.reward_functions import REWARD_FUNCTIONS, register_reward_function

VOWELS = set("aeiou")


@register_reward_function("test_vowel_share")
def vowel_share(prompt: str, completion: str) -> float:
    """Share of vowels among the completion's letters: a dense signal a random model can climb."""
    letters = [c for c in completion.lower() if c.isalpha()]
    return sum(c in VOWELS for c in letters) / max(len(letters), 1)


@pytest.fixture()
def prompt_data(tmp_path):
    rng = random.Random(0)
    rows = [{"prompt": f"Tell me about {rng.choice(['cats', 'rain', 'maps', 'tea'])} number {i}."} for i in range(40)]
    return write_jsonl(tmp_path / "prompts.jsonl", rows[:32]), write_jsonl(tmp_path / "val.jsonl", rows[32:])


@pytest.fixture(scope="module")
def peaked_tiny(tmp_path_factory, tiny_path):
    """tiny with its tied embeddings scaled x8: a peaked next-token distribution like a trained LM's.

    Random-init tiny is almost uniform over 512 tokens (logit std 0.16) and LoRA cannot change
    its bounded logits enough for any sampled reward to move within a few rollouts.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("peaked_tiny")
    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_path).save_pretrained(folder)
    return str(folder)


def _ppo_config(tmp_path, data, model_name="tiny", **training):
    return tiny_config(
        tmp_path, "ppo", data, model={"name": model_name},
        method_args={"reward_function": "test_vowel_share", "rollout_batch_size": 32, "ppo_epochs": 1,
                     "max_new_tokens": 12, "kl_coef": 0.1, "vf_coef": 0.1},
        training={"max_steps": 32, "micro_batch_size": 8, "learning_rate": 2e-2, **training},
    )


def _records(run_dir: str) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_ppo_raises_rule_reward_with_bounded_kl(tmp_path, prompt_data, peaked_tiny):
    from tunelab.train.loop import train

    assert "test_vowel_share" in REWARD_FUNCTIONS
    result = train(_ppo_config(tmp_path, prompt_data, peaked_tiny))
    rows = [r for r in _records(result.run_dir) if "reward" in r]
    per_rollout = rows[::4]  # 32 prompts / micro-batch 8 = 4 optimizer steps per rollout
    rewards, kls = [r["reward"] for r in per_rollout], [r["kl"] for r in per_rollout]
    assert len(rewards) == 8
    assert sum(rewards[-3:]) / 3 > rewards[0] + 0.08, rewards
    # The KL penalty holds the policy: KL plateaus instead of growing rollout after rollout.
    assert max(kls[4:]) <= 1.25 * max(kls[:4]) and max(kls) < 80.0, kls
    assert {"entropy", "clip_frac", "value_loss", "explained_variance", "kl_coef"} <= set(rows[-1])
    assert Path(result.run_dir, "ppo.png").is_file()


def test_ppo_resume_equals_uninterrupted(tmp_path, prompt_data):
    """A run stopped mid-rollout (step 3 of 4) and resumed ends with the same adapter and value head."""
    from tunelab.train.loop import train

    method_args = {"rollout_batch_size": 16, "ppo_epochs": 2, "max_new_tokens": 6}
    full = _ppo_config(tmp_path / "a", prompt_data, max_steps=6, save_every=3)
    full.method_args.update(method_args)
    a = train(full)
    short = _ppo_config(tmp_path / "b", prompt_data, max_steps=3, save_every=3)
    short.method_args.update(method_args)
    train(short)
    resumed = short.model_copy(deep=True)
    resumed.training.max_steps = 6
    b = train(resumed, resume=True)
    wa = load_file(str(Path(a.run_dir, "adapter", "adapter_model.safetensors")))
    wb = load_file(str(Path(b.run_dir, "adapter", "adapter_model.safetensors")))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
    ra, rb = _records(a.run_dir), _records(b.run_dir)
    after = [r.get("reward") for r in rb if r["step"] > 3]
    assert [r.get("reward") for r in ra if r["step"] > 3] == pytest.approx(after)
