"""Reward model: a Bradley–Terry scorer of prompt/completion pairs (``method: reward``).

Papers: Stiennon et al., 2020 (arXiv:2009.01325) and Ouyang et al., 2022 (arXiv:2203.02155);
the optional per-pair margin is Llama 2's (Touvron et al., 2023, arXiv:2307.09288).

Intuition: a human preferred ``y_c`` over ``y_r``; under the Bradley–Terry model that happens
with probability ``σ(r(x, y_c) − r(x, y_r))``, so the reward model maximises that likelihood. The
score is a linear head on the causal LM's last hidden state at the last real token (the EOS of
the rendered completion), trained with LoRA or fully. The head is saved as
``<run>/reward_head.safetensors``; :func:`score` and ``tunelab reward score`` reload base +
adapter + head and score new pairs; PPO uses the same :class:`RewardScorer` as its frozen reward.

Checked by: the loss against ``trl.RewardTrainer`` (tests/align/test_losses.py); on ``tiny`` the
model ranks held-out pairs above chance and the saved head reloads to identical scores
(tests/align/test_reward.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tunelab.methods.args import parse_method_args
from tunelab.methods.base import Batch, Datasets, Method
from tunelab.methods.logprobs import check_body_adapter, hidden_and_logits, last_token_index, pad_right
from tunelab.methods.losses import LossOutput, bradley_terry_loss
from tunelab.methods.preference import alignment_datasets, evaluate_weighted, pair_metrics
from tunelab.methods.value_head import ScalarHead, attach_head, load_head, save_head

HEAD_FILE = "reward_head.safetensors"


def sequence_scores(model: nn.Module, head: ScalarHead, ids: Tensor, mask: Tensor) -> Tensor:
    """(B,) scores: the head on the hidden state of each row's last real token."""
    hidden, _ = hidden_and_logits(model, ids, mask, want_logits=False)
    last = hidden[torch.arange(ids.shape[0], device=ids.device), last_token_index(mask)]  # (B, H)
    return head(last).float()


class RewardModel(Method):
    name = "reward"
    multi_process = False  # the scalar head runs the decoder body directly, past DDP's forward

    def __init__(self, config, model: nn.Module, tokenizer, run_dir):
        super().__init__(config, model, tokenizer, run_dir)
        check_body_adapter(config.adapter.type, self.name)
        self.args = parse_method_args(self.name, config.method_args)
        self.head = attach_head(model, "reward_head")

    def build_datasets(self) -> Datasets:
        return alignment_datasets(self, "preference")

    def collate(self, items: list) -> Batch:
        rows = [it.prompt_ids + it.chosen_ids for it in items] + [it.prompt_ids + it.rejected_ids for it in items]
        ids, mask = pad_right(rows, self.tokenizer.pad_token_id)
        margin = torch.tensor([it.margin for it in items], dtype=torch.float32)
        return {"input_ids": ids, "attention_mask": mask, "margin": margin}

    def batch_weight(self, batch: Batch) -> float:
        return float(batch["margin"].shape[0])

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        scores = sequence_scores(model, self.head, batch["input_ids"], batch["attention_mask"])
        b = scores.shape[0] // 2
        margin = batch["margin"] if self.args.use_margin else None
        per_pair = bradley_terry_loss(scores[:b], scores[b:], margin)
        out = LossOutput(per_pair, scores[:b].detach(), scores[b:].detach())
        return per_pair.mean(), pair_metrics(out)

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        return evaluate_weighted(self, model, batches)

    def after_training(self, model: nn.Module) -> dict[str, Any]:
        path = self.run_dir / HEAD_FILE
        save_head(self.head, path)
        return {"reward_head": str(path)}


# --------------------------------------------------------------------------- scoring API


@dataclass
class RewardScorer:
    """A frozen reward model loaded from a ``method: reward`` run."""

    model: nn.Module
    head: ScalarHead
    tokenizer: Any
    config: Any

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> RewardScorer:
        from tunelab.methods.logprobs import base_causal_lm
        from tunelab.models.load import load_run

        run = load_run(run_dir, device=device)
        lm = base_causal_lm(run.model)
        param = next(lm.parameters())
        head = load_head(Path(run_dir) / HEAD_FILE, lm.config.hidden_size, param.device)
        for p in [*run.model.parameters(), *head.parameters()]:
            p.requires_grad_(False)
        head.to(param.dtype)
        return cls(run.model.eval(), head.eval(), run.tokenizer, run.config)

    def encode(self, prompt: str | list[dict], completion: str) -> list[int]:
        from tunelab.data.preference import Renderer, as_messages

        renderer = Renderer(self.tokenizer, self.config.data)
        return renderer.encode(as_messages(prompt, "user", "prompt"), completion)

    @torch.no_grad()
    def score(self, pairs: Sequence[tuple[str | list[dict], str]], batch_size: int = 16) -> list[float]:
        """Scores of ``(prompt, completion)`` pairs, rendered with the reward run's template."""
        device = next(self.head.parameters()).device
        out: list[float] = []
        for i in range(0, len(pairs), batch_size):
            rows = [self.encode(p, c) for p, c in pairs[i : i + batch_size]]
            ids, mask = pad_right(rows, self.tokenizer.pad_token_id)
            out.extend(sequence_scores(self.model, self.head, ids.to(device), mask.to(device)).tolist())
        return out


def score(run_dir: str | Path, pairs: Sequence[tuple[str | list[dict], str]], device: str = "auto") -> list[float]:
    """Score ``(prompt, completion)`` pairs with the reward model trained in ``run_dir``.

    Raises:
        CheckpointError: ``run_dir`` is not a finished ``method: reward`` run.
    """
    return RewardScorer.load(run_dir, device).score(pairs)
