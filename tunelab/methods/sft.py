"""Supervised fine-tuning (SFT): next-token cross-entropy on the answer tokens.

Instruction tuning (Wei et al., 2022, "Finetuned Language Models Are Zero-Shot Learners",
arXiv:2109.01652; Ouyang et al., 2022) trains the model to continue a rendered prompt with its
answer. The loss is the mean negative log-likelihood of the *trained* tokens only (prompt
tokens have label -100), so a long prompt does not drown the answer. Examples are packed into
rows with ``position_ids`` restarting per example: transformers then builds a block-diagonal
causal mask, so attention never crosses examples and no compute is wasted on padding.

Checked by: label-mask tests per template, packed-vs-alone logits equality, and the
accumulation-equivalence and resume tests of the loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.methods.base import Batch, Datasets, Method
from tunelab.models.adapters import PROMPT_LEARNING


def token_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token NLL and the number of trained tokens.

    Args:
        logits: (B, T, V) scores for positions 0..T-1.
        labels: (B, T) token ids, -100 where not trained.

    Returns:
        ``(sum_nll, count)``: scalar tensors; the mean is ``sum_nll / count``.
    """
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V) predicts tokens 1..T-1
    shift_labels = labels[:, 1:]  # (B, T-1)
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return nll, (shift_labels != -100).sum()


class SFT(Method):
    name = "sft"

    @property
    def uses_position_ids(self) -> bool:
        # peft's prompt/prefix tuning prepend virtual tokens and ignore position_ids, so those
        # adapters are trained unpacked with an attention mask instead.
        return self.config.adapter.type not in PROMPT_LEARNING

    def build_datasets(self) -> Datasets:
        from tunelab.data import prepare

        packing = self.config.data.packing and self.uses_position_ids
        prepared = prepare(
            self.config.data, self.tokenizer, packing=packing, rejects_path=self.run_dir / "rejects.jsonl"
        )
        return Datasets(prepared.train, prepared.validation, prepared.report.to_dict())

    def collate(self, items: list) -> Batch:
        from tunelab.data import collate_rows
        from tunelab.data.collate import example_lengths

        batch = collate_rows(items, self.tokenizer.pad_token_id)
        batch["_lengths"] = example_lengths(items)  # read by the loop (tokens/s, FLOPs), not the model
        if self.uses_position_ids:
            batch.pop("attention_mask")
        else:
            batch.pop("position_ids")
        return batch

    def batch_weight(self, batch: Batch) -> float:
        return float((batch["labels"][:, 1:] != -100).sum())

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        from tunelab.methods.lm_loss import next_token_logps

        inputs = {k: v for k, v in batch.items() if k != "labels" and not k.startswith("_")}
        # Only answer tokens reach the LM head, in chunks recomputed in backward (lm_loss.py);
        # no cache: it would merge packed examples.
        logps = next_token_logps(model, inputs, batch["labels"])
        count = (batch["labels"][:, 1:] != -100).sum()
        mean = -logps.sum() / count.clamp(min=1)
        return mean, {"trained_tokens": float(count)}

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        import math

        total, count = 0.0, 0.0
        with torch.no_grad():
            for batch in batches:
                loss, m = self.loss(model, batch)
                total += float(loss) * m["trained_tokens"]
                count += m["trained_tokens"]
        mean = total / max(count, 1.0)
        return {"val_loss": mean, "val_ppl": math.exp(min(mean, 50.0))}
