"""KTO: Kahneman–Tversky optimisation from unpaired good/bad examples (``method: kto``).

Paper: Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect Theoretic Optimization",
arXiv:2402.01306.

Intuition: only a thumbs-up/down per completion is needed. The implicit reward
``β log π/π_ref`` of each completion is compared with a reference point ``z_0`` — an estimate of
``KL(π‖π_ref)`` — through a sigmoid value function: desirable completions are pushed above the
reference point and undesirable ones below it, with separate weights for the two (loss aversion).
``z_0`` is estimated as in the paper and TRL: the batch mean of the log-ratio on *mismatched*
pairs (each prompt with the previous example's completion), clamped at 0 and detached.

Checked by: ``kto_loss`` and ``kto_kl_estimate`` against ``trl.KTOTrainer`` (tests/align/test_losses.py)
and a run on ``tiny`` that separates held-out desirable from undesirable completions
(tests/align/test_reward.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tunelab.errors import ConfigError
from tunelab.methods.args import parse_method_args
from tunelab.methods.base import Batch, Datasets, Method
from tunelab.methods.logprobs import completion_logps, prompt_completion_batch
from tunelab.methods.losses import kto_kl_estimate, kto_loss
from tunelab.methods.preference import alignment_datasets, weighted_means
from tunelab.methods.reference import Reference


class KTO(Method):
    name = "kto"
    needs_reference = True

    def __init__(self, config, model: nn.Module, tokenizer, run_dir):
        super().__init__(config, model, tokenizer, run_dir)
        self.args = parse_method_args(self.name, config.method_args)
        if config.training.micro_batch_size < 2:
            raise ConfigError(
                "training.micro_batch_size must be >= 2 for method=kto: the KL reference point pairs each "
                "prompt with another example's completion"
            )
        self.reference = Reference(config, model)

    def build_datasets(self) -> Datasets:
        return alignment_datasets(self, "unpaired")

    def collate(self, items: list) -> Batch:
        prompts = [it.prompt_ids for it in items]
        completions = [it.completion_ids for it in items]
        rotated = completions[-1:] + completions[:-1]  # (x_i, y_{i-1}): mismatched pairs for z_0
        pad = self.tokenizer.pad_token_id
        batch: Batch = prompt_completion_batch(prompts, completions, pad)
        kl = prompt_completion_batch(prompts, rotated, pad)
        batch.update({f"kl_{k}": v for k, v in kl.items()})
        batch["label"] = torch.tensor([it.label for it in items], dtype=torch.bool)
        return batch

    def batch_weight(self, batch: Batch) -> float:
        return float(batch["label"].shape[0])

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        kl_batch = {k[3:]: v for k, v in batch.items() if k.startswith("kl_")}
        logps, _ = completion_logps(model, batch)  # (B,)
        with torch.no_grad():
            kl_logps, _ = completion_logps(model, kl_batch)
        ref = self.reference.logps(model, batch).to(logps.dtype)
        ref_kl = self.reference.logps(model, kl_batch).to(logps.dtype)
        z0 = kto_kl_estimate(kl_logps, ref_kl)
        label = batch["label"]
        ratios = logps - ref
        losses = kto_loss(
            ratios[label], ratios[~label], z0, self.args.beta, self.args.desirable_weight, self.args.undesirable_weight
        )
        rewards = self.args.beta * ratios.detach()
        correct = torch.where(label, rewards > 0, rewards < 0).float()
        metrics = {"kl": float(z0), "accuracy": float(correct.mean())}
        if label.any():
            metrics["reward_chosen"] = float(rewards[label].mean())
        if (~label).any():
            metrics["reward_rejected"] = float(rewards[~label].mean())
        return losses.mean(), metrics

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        records = []
        with torch.no_grad():
            for batch in batches:
                if batch["label"].shape[0] < 2:
                    continue  # a lone example has no mismatched pair for z_0
                loss, metrics = self.loss(model, batch)
                records.append(({"loss": float(loss), **metrics}, self.batch_weight(batch)))
        return weighted_means(records, "val_")

    def after_training(self, model: nn.Module) -> dict[str, Any]:
        return {"beta": self.args.beta}
