"""A scalar head on a causal LM's last hidden state: the reward model's score and PPO's value.

Reward models (Ouyang et al., 2022, arXiv:2203.02155; Stiennon et al., 2020) replace the LM
head with a linear map to one number read at the last non-pad token; PPO's critic reads one per
token. The head is registered as a submodule of the trained model so the loop's optimizer,
checkpoints and resume cover it; it is saved beside the adapter/model as a separate safetensors
file (a peft adapter does not know about it) and reloaded bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tunelab.errors import CheckpointError


class ScalarHead(nn.Module):
    """``hidden (..., H) -> (...)``: one linear unit, initialised small (std 1/sqrt(H+1), as TRL)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.linear.weight, std=1.0 / (hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


def attach_head(model: nn.Module, name: str) -> ScalarHead:
    """Create a head sized for ``model`` and register it as ``model.<name>`` (trainable).

    A fully fine-tuned transformers model would otherwise write the head into its own weights
    file; ``_keys_to_ignore_on_save`` keeps the HF folder loadable by ``from_pretrained``.
    """
    from tunelab.methods.logprobs import base_causal_lm

    lm = base_causal_lm(model)
    param = next(lm.parameters())
    head = ScalarHead(lm.config.hidden_size).to(param.device)
    model.add_module(name, head)
    if not hasattr(model, "peft_config"):
        ignore = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
        model._keys_to_ignore_on_save = ignore | {f"{name}.linear.weight", f"{name}.linear.bias"}
    return head


def save_head(head: ScalarHead, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))


def load_head(path: Path, hidden_size: int, device: torch.device | str = "cpu") -> ScalarHead:
    if not Path(path).is_file():
        raise CheckpointError(f"{path} not found: this run has no scalar head (was it trained with method: reward?)")
    head = ScalarHead(hidden_size)
    head.load_state_dict(load_file(str(path)))
    return head.to(device)
