"""Fixtures of the generation tests: the tiny model, a draft copy, chat prompts."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def lm(tiny_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_path).eval()


@pytest.fixture(scope="session")
def draft_lm(tiny_path):
    """``tiny`` with seeded noise on every weight: agrees with the target often, not always."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * p.std() * torch.randn(p.shape, generator=gen))
    return model


def chat_ids(tokenizer, text: str, system: str | None = None) -> list[int]:
    rows = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    rendered = tokenizer.apply_chat_template(rows, add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="session")
def encode_chat(tiny_tokenizer):
    """``encode_chat(text, system=None)`` → chat-template token ids of tiny."""
    return lambda text, system=None: chat_ids(tiny_tokenizer, text, system)


@pytest.fixture(scope="session")
def prompts(tiny_tokenizer):
    texts = ["the answer is the answer is", "write a list: a b c a b c", "hello"]
    return [chat_ids(tiny_tokenizer, t) for t in texts]
