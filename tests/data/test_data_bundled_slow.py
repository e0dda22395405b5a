"""On the bundled SmolLM2 tokenizer: chat-template rendering gives exactly the served token ids."""

from __future__ import annotations

import pytest

from tests.data.conftest import trained_text
from tunelab.data import Example, tokenize_example

pytestmark = pytest.mark.slow

CONVERSATION = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris"},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome"},
]


def test_smollm2_chat_labels_and_ids():
    from tunelab.models.load import load_tokenizer
    from tunelab.models.resolve import resolve_model

    tok = load_tokenizer(resolve_model("smollm2-135m-instruct").path)
    out = tokenize_example(Example(CONVERSATION, None, "mem", 1), tok, "chat")
    assert out.input_ids == tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    assert trained_text(tok, out.input_ids, out.labels) == "Paris<|im_end|>Rome<|im_end|>"
