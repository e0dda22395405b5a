"""PPO RLHF on the one loop (``method: ppo``): LoRA policy + value head vs a frozen reward.

Papers: Ziegler et al., 2019 (arXiv:1909.08593), Stiennon et al., 2020 (arXiv:2009.01325),
Ouyang et al., 2022 (arXiv:2203.02155); PPO (Schulman et al., 2017); GAE (Schulman et al., 2016).

Intuition: sample completions for a batch of prompts with the KV cache, score each with a frozen
reward model (a ``method: reward`` run) or a registered rule, and subtract a per-token KL
penalty to the reference (the same policy with its LoRA adapter disabled: no second copy). GAE
turns the per-token rewards into advantages (whitened), and several PPO epochs over
mini-batches of that rollout take clipped policy and value steps. Each loop step is one
optimizer step on ``gradient_accumulation`` micro-batches taken from a rollout buffer; the
buffer, its order and the KL controller are method state, so a resumed run continues exactly.

Checked by: ``tests/align/test_ppo_math.py`` (GAE, whitening, clipped losses, KL controller by
hand) and ``tests/align/test_ppo.py`` (mean rule reward rises with bounded KL on ``tiny``; resume
equals an uninterrupted run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tunelab.errors import ConfigError
from tunelab.methods.args import parse_method_args
from tunelab.methods.base import Batch, Datasets, Method
from tunelab.methods.logprobs import (
    check_body_adapter,
    dropout_off,
    hidden_and_logits,
    is_peft,
    reference_mode,
    token_logps,
)
from tunelab.methods.ppo_math import (
    KLController,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    kl_penalised_rewards,
    masked_mean,
    whiten,
)
from tunelab.methods.preference import alignment_datasets
from tunelab.methods.reference import loop_autocast
from tunelab.methods.value_head import attach_head


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


def response_mask(response: Tensor, eos_ids: set[int]) -> Tensor:
    """(B, R) 1 on generated tokens up to and including the first EOS."""
    is_eos = torch.zeros_like(response, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= response == e
    after = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after).long()


class PPO(Method):
    name = "ppo"
    multi_process = False  # rollouts generate per rank (unequal forwards) and run the body past DDP
    needs_reference = True

    def __init__(self, config, model: nn.Module, tokenizer, run_dir):
        super().__init__(config, model, tokenizer, run_dir)
        self.args = parse_method_args(self.name, config.method_args)
        check_body_adapter(config.adapter.type, self.name)
        if not is_peft(model):
            raise ConfigError(
                "method=ppo trains a peft adapter (the reference is the adapter-off policy).\n"
                "  fix: adapter.type lora, dora or qlora"
            )
        chunk = config.training.micro_batch_size * config.training.gradient_accumulation
        if self.args.rollout_batch_size % chunk:
            raise ConfigError(
                f"method_args.rollout_batch_size={self.args.rollout_batch_size} must be a multiple of "
                f"micro_batch_size x gradient_accumulation = {chunk}"
            )
        self.value_head = attach_head(model, "value_head")
        self.kl = KLController(self.args.kl_coef, self.args.target_kl, self.args.kl_horizon)
        self.buffer: dict[str, Tensor] = {}
        self.order: list[int] = []
        self.stats: dict[str, float] = {}
        self.scorer = self._build_scorer()

    def _build_scorer(self) -> Callable[[list[str], list[str]], list[float]]:
        if self.args.reward_function is not None:
            from tunelab.methods.reward_functions import get_reward_function

            fn = get_reward_function(self.args.reward_function)
            return lambda prompts, completions: [fn(p, c) for p, c in zip(prompts, completions, strict=True)]
        from tunelab.methods.reward import RewardScorer

        device = next(self.model.parameters()).device.type
        scorer = RewardScorer.load(self.args.reward_model, device=device)
        return lambda prompts, completions: scorer.score(list(zip(prompts, completions, strict=True)))

    # -- data -------------------------------------------------------------------------
    def build_datasets(self) -> Datasets:
        data = alignment_datasets(self, "prompt")
        if len(data.train) < self.args.rollout_batch_size:
            raise ConfigError(
                f"method_args.rollout_batch_size={self.args.rollout_batch_size} > the "
                f"{len(data.train)} training prompts"
            )
        return data

    def collate(self, items: list) -> Batch:
        ids, mask = left_pad([it.prompt_ids for it in items], self.tokenizer.pad_token_id)
        return {"prompt_ids": ids, "prompt_mask": mask, "texts": [it.text for it in items]}

    # -- rollouts ---------------------------------------------------------------------
    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= set(gen) if isinstance(gen, list) else ({gen} if gen is not None else set())
        return {i for i in ids if i is not None}

    @torch.no_grad()
    def generate(self, model: nn.Module, batch: Batch, sample: bool = True) -> tuple[Tensor, Tensor, list[str]]:
        """Completions with the KV cache: ``(sequences (B, P+R), response mask (B, R), texts)``."""
        prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
        kwargs = (
            {"do_sample": True, "temperature": self.args.temperature, "top_k": self.args.top_k or None, "top_p": 1.0}
            if sample
            else {"do_sample": False}
        )
        out = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=self.args.max_new_tokens,
            use_cache=True,
            pad_token_id=self.tokenizer.pad_token_id,
            **kwargs,
        )
        response = out[:, prompt_ids.shape[1] :]
        mask = response_mask(response, self._eos_ids())
        texts = self.tokenizer.batch_decode(
            response * mask + (1 - mask) * self.tokenizer.pad_token_id, skip_special_tokens=True
        )
        return out, mask, texts

    def _forward(self, model: nn.Module, seq: Tensor, attn: Tensor, prompt_len: int) -> tuple[Tensor, Tensor, Tensor]:
        """Response-token log-probs, values and logits: (B, R), (B, R), (B, R, V).

        Logits are divided by the sampling temperature, as in TRL: the policy being optimised
        (and its KL to the reference) is the one that generated the rollout.
        """
        position_ids = (attn.cumsum(dim=1) - 1).clamp(min=0)  # left padding: positions as in generate
        hidden, logits = hidden_and_logits(model, seq, attn, position_ids=position_ids)
        logits = logits / self.args.temperature  # the policy is the distribution rollouts sample from
        logps = token_logps(logits, seq)[:, prompt_len - 1 :]
        values = self.value_head(hidden[:, prompt_len - 1 : -1]).float()
        return logps, values, logits[:, prompt_len - 1 : -1]

    @torch.no_grad()
    def rollout(self, model: nn.Module, batch: Batch) -> None:
        """Generate, score and compute advantages for one batch of prompts into the buffer."""
        was_training = model.training
        model.eval()
        seq, mask, texts = self.generate(model, batch)
        p = batch["prompt_ids"].shape[1]
        attn = torch.cat([batch["prompt_mask"], mask], dim=1)
        with loop_autocast(self.config, seq.device):  # old log-probs in the precision of the loss
            logps, values, _ = self._forward(model, seq, attn, p)
            with reference_mode(model):
                ref_logps, _, _ = self._forward(model, seq, attn, p)
        scores = torch.tensor(self.scorer(batch["texts"], texts), dtype=torch.float32, device=seq.device)
        mask_f = mask.float()
        rewards = kl_penalised_rewards(scores, logps, ref_logps, mask_f, self.kl.value)
        adv, returns = gae(rewards, values, mask_f, self.args.gamma, self.args.lam)
        adv = whiten(adv, mask_f)
        kl = ((logps - ref_logps) * mask_f).sum(dim=1).mean()
        self.stats = {
            "reward": float(scores.mean()),
            "kl": float(kl),
            "kl_coef": self.kl.value,
            "response_length": float(mask_f.sum(dim=1).mean()),
        }
        self.kl.update(float(kl), n_steps=seq.shape[0])
        self.buffer = {
            "seq": seq.cpu(),
            "attn": attn.cpu(),
            "mask": mask_f.cpu(),
            "old_logps": logps.cpu(),
            "old_values": values.cpu(),
            "adv": adv.cpu(),
            "returns": returns.cpu(),
            "prompt_len": torch.tensor(p),
        }
        n = seq.shape[0]
        self.order = torch.cat([torch.randperm(n) for _ in range(self.args.ppo_epochs)]).tolist()
        model.train(was_training)

    def next_micro_batches(self, model: nn.Module, step: int, sampler) -> list[Batch]:
        if not self.order:
            items = [self._train_items[i] for i in sampler.take(self.args.rollout_batch_size)]
            device = next(model.parameters()).device
            batch = self.collate(items)
            batch = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
            self.rollout(model, batch)
        mbs, out = self.config.training.micro_batch_size, []
        for _ in range(self.config.training.gradient_accumulation):
            idx, self.order = torch.tensor(self.order[:mbs]), self.order[mbs:]
            mb = {k: v[idx] for k, v in self.buffer.items() if k != "prompt_len"}
            out.append(
                {
                    **mb,
                    "prompt_len": int(self.buffer["prompt_len"]),
                    "input_ids": mb["seq"],
                    "attention_mask": mb["attn"],
                }
            )
        return out

    def before_training(self, model: nn.Module, datasets: Datasets) -> None:
        self._train_items = datasets.train

    # -- math -------------------------------------------------------------------------
    def batch_weight(self, batch: Batch) -> float:
        return float(batch["mask"].sum())

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        mask = batch["mask"]
        with dropout_off(model):  # as the eval-mode rollout pass: the ratio is exactly 1 before an update
            logps, values, logits = self._forward(model, batch["seq"], batch["attn"], batch["prompt_len"])
        pg_loss, clip_frac = clipped_policy_loss(logps, batch["old_logps"], batch["adv"], mask, self.args.cliprange)
        vf_loss = clipped_value_loss(values, batch["old_values"], batch["returns"], mask, self.args.cliprange_value)
        with torch.no_grad():
            logp_all = torch.log_softmax(logits.float(), dim=-1)
            entropy = masked_mean(-(logp_all.exp() * logp_all).sum(-1), mask)
            metrics = {
                "policy_loss": float(pg_loss),
                "value_loss": float(vf_loss),
                "clip_frac": float(clip_frac),
                "entropy": float(entropy),
                "approx_kl": float(masked_mean(batch["old_logps"] - logps, mask)),
                "explained_variance": float(explained_variance(values, batch["returns"], mask)),
                **self.stats,
            }
        return pg_loss + self.args.vf_coef * vf_loss, metrics

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """Mean reward of greedy completions of the validation prompts."""
        scores: list[float] = []
        for batch in batches:
            _, _, texts = self.generate(model, batch, sample=False)
            scores.extend(self.scorer(batch["texts"], texts))
        return {"val_reward": sum(scores) / max(len(scores), 1)}

    # -- resume and results -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "kl_coef": self.kl.value,
            "buffer": dict(self.buffer),
            "order": list(self.order),
            "stats": dict(self.stats),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl.value = float(state["kl_coef"])
        self.buffer, self.order, self.stats = dict(state["buffer"]), list(state["order"]), dict(state["stats"])

    def after_training(self, model: nn.Module) -> dict[str, Any]:
        import json

        from tunelab.train.metrics import plot_curves

        lines = (self.run_dir / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line]
        plot = plot_curves(
            records,
            self.run_dir / "ppo.png",
            [("reward", "mean reward"), ("kl", "KL to reference")],
            f"ppo · {self.config.model.name}",
        )
        rewards = [r["reward"] for r in records if "reward" in r]
        return {
            "plot": str(plot) if plot else None,
            "first_reward": rewards[0] if rewards else None,
            "last_reward": rewards[-1] if rewards else None,
        }
