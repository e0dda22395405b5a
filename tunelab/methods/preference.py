"""Direct preference optimisation on the one loop: DPO (+ IPO, hinge, robust), SimPO, ORPO.

Papers: DPO (Rafailov et al., 2023, arXiv:2305.18290), IPO (Azar et al., 2023), robust DPO
(Chowdhury et al., 2024), SimPO (Meng et al., 2024, arXiv:2405.14734), ORPO (Hong et al.,
2024, arXiv:2403.07691).

Intuition: the optimal policy of KL-regularised RLHF is ``π* ∝ π_ref · exp(r/β)``, so a policy
implies the reward ``β log π/π_ref``; fitting that implicit reward to preference pairs with a
Bradley–Terry (or squared, hinge ...) loss trains the policy without a reward model or
sampling. SimPO drops the reference and uses the length-normalised log-likelihood as the
reward; ORPO adds an odds-ratio penalty to plain SFT on the chosen answer. Chosen and rejected
completions of a batch go through the model in one concatenated forward pass.

Checked by: ``tests/align/test_losses.py`` (loss math, TRL equivalence) and
``tests/align/test_preference_runs.py`` (held-out preference accuracy rises on ``tiny``; one
copy of the base weights with an adapter; reference = adapter-off base).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tunelab.methods.args import parse_method_args
from tunelab.methods.base import Batch, Datasets, Method
from tunelab.methods.logprobs import completion_logps, packed_prompt_completion_batch, prompt_completion_batch
from tunelab.methods.losses import LossOutput, LossParams, PairLogps, get_loss


def alignment_datasets(method: Method, kind: str) -> Datasets:
    """Read ``method.config.data`` as ``kind`` (preference, unpaired or prompt) data, write the
    run's ``rejects.jsonl``, and return the splits with their report (shared by every
    alignment method)."""
    from tunelab.data.preference import load_alignment_data, write_rejects

    data = load_alignment_data(method.config.data, method.tokenizer, kind)
    write_rejects(data, method.run_dir)
    return Datasets(data.train, data.validation, data.report(kind))


def weighted_means(records: list[tuple[dict[str, float], float]], prefix: str = "") -> dict[str, float]:
    """Weighted mean of each metric over ``(metrics, weight)`` records."""
    total = sum(w for _, w in records) or 1.0
    keys = {k for m, _ in records for k in m}
    return {prefix + k: sum(m.get(k, 0.0) * w for m, w in records) / total for k in sorted(keys)}


def evaluate_weighted(method: Method, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
    """``val_``-prefixed loss and metrics of ``method``, weighted by its batch weights (pairs)."""
    records = []
    with torch.no_grad():
        for batch in batches:
            loss, metrics = method.loss(model, batch)
            records.append(({"loss": float(loss), **metrics}, method.batch_weight(batch)))
    return weighted_means(records, "val_")


def pair_metrics(out: LossOutput) -> dict[str, float]:
    """Loss-side metrics of a batch: implicit rewards, margin, accuracy (ties count one half)."""
    diff = out.chosen_rewards - out.rejected_rewards
    acc = (diff > 0).float() + 0.5 * (diff == 0).float()
    metrics = {
        "reward_chosen": float(out.chosen_rewards.mean()),
        "reward_rejected": float(out.rejected_rewards.mean()),
        "margin": float(diff.mean()),
        "accuracy": float(acc.mean()),
    }
    metrics.update({k: float(v.mean()) for k, v in out.parts.items()})
    return metrics


class Preference(Method):
    """Shared DPO-family method; subclasses only change the name (and so the default loss of
    their ``method_args`` schema in :mod:`tunelab.methods.args`)."""

    name = "dpo"

    def __init__(self, config, model: nn.Module, tokenizer, run_dir):
        super().__init__(config, model, tokenizer, run_dir)
        self.args = parse_method_args(self.name, config.method_args)
        self.spec = get_loss(self.args.loss)
        self.params = LossParams(self.args.beta, self.args.label_smoothing, self.args.gamma, self.args.orpo_lambda)
        self.reference = None
        if self.spec.needs_reference:
            from tunelab.methods.reference import Reference

            self.reference = Reference(config, model)

    # -- data -------------------------------------------------------------------------
    def build_datasets(self) -> Datasets:
        return alignment_datasets(self, "preference")

    @property
    def packing(self) -> bool:
        """Pack the batch's sequences (padding-free) unless data.packing is off or a prompt-learning
        adapter ignores position_ids."""
        from tunelab.models.adapters import PROMPT_LEARNING

        return self.config.data.packing and self.config.adapter.type not in PROMPT_LEARNING

    def collate(self, items: list) -> Batch:
        """Chosen then rejected sequences (sequence i < B is pair i's chosen), packed or right-padded."""
        prompts = [it.prompt_ids for it in items] * 2
        completions = [it.chosen_ids for it in items] + [it.rejected_ids for it in items]
        if self.packing:
            batch: Batch = packed_prompt_completion_batch(
                prompts, completions, self.tokenizer.pad_token_id, self.config.data.max_length
            )
        else:
            batch = prompt_completion_batch(prompts, completions, self.tokenizer.pad_token_id)
        if all(it.ref_chosen is not None for it in items):
            batch["ref_logps"] = torch.tensor(
                [it.ref_chosen for it in items] + [it.ref_rejected for it in items], dtype=torch.float32
            )
        return batch

    def batch_weight(self, batch: Batch) -> float:
        return len(self.example_lengths(batch)) / 2

    def example_lengths(self, batch: Batch) -> list[int]:
        if "sequence_index" in batch:
            owner = batch["sequence_index"]
            return [int(n) for n in torch.bincount(owner[owner >= 0]).tolist()]
        return super().example_lengths(batch)

    def frozen_forward_lengths(self, batch: Batch) -> list[int]:
        on_the_fly = self.spec.needs_reference and "ref_logps" not in batch
        return self.example_lengths(batch) if on_the_fly else []

    # -- math -------------------------------------------------------------------------
    def pair_logps(self, model: nn.Module, batch: Batch) -> PairLogps:
        """Policy (and reference) log-probs of the batch's chosen and rejected completions."""
        logps, counts = completion_logps(model, batch)  # (2B,), (2B,)
        b = logps.shape[0] // 2
        ref = None
        if self.spec.needs_reference:
            ref = batch["ref_logps"] if "ref_logps" in batch else self.reference.logps(model, batch)
            ref = ref.to(logps.dtype)
        return PairLogps(
            logps[:b],
            logps[b:],
            counts[:b],
            counts[b:],
            None if ref is None else ref[:b],
            None if ref is None else ref[b:],
        )

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        out = self.spec.fn(self.pair_logps(model, batch), self.params)
        return out.loss.mean(), pair_metrics(out)

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        return evaluate_weighted(self, model, batches)

    def before_training(self, model: nn.Module, datasets: Datasets) -> None:
        if not (self.args.precompute_reference and self.spec.needs_reference):
            return
        from tunelab.methods.reference import precompute

        def columns(batch: Batch, logps: Tensor) -> dict[str, Tensor]:
            b = logps.shape[0] // 2
            return {"chosen": logps[:b], "rejected": logps[b:]}

        def store(item, values: dict[str, float]) -> None:
            item.ref_chosen, item.ref_rejected = values["chosen"], values["rejected"]

        precompute(
            self.reference,
            model,
            self.config,
            self.run_dir,
            {"train": datasets.train, "validation": datasets.validation},
            self.collate,
            columns,
            store,
        )

    def after_training(self, model: nn.Module) -> dict[str, Any]:
        return {"loss_type": self.args.loss, "beta": self.args.beta}


class DPO(Preference):
    name = "dpo"
    needs_reference = True


class SimPO(Preference):
    name = "simpo"


class ORPO(Preference):
    name = "orpo"
