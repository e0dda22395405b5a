"""The built-in ``tiny`` model: a deterministic, randomly initialised Llama of ~230k parameters.

Why: every test and every dry run of a config needs a real model with a real tokenizer and a
chat template, and it must load offline in well under 5 s on 2 CPU cores. ``tiny`` is built on
first use from a fixed config, a byte-level BPE tokenizer trained on a small corpus shipped in
``tunelab/presets/tiny_corpus.txt`` and a fixed seed, then cached under ``$TUNELAB_HOME``.
It uses grouped-query attention and tied embeddings like SmolLM2, so the code paths match the
bundled model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tunelab.paths import models_cache, publish_folder
from tunelab.presets import preset_path

TINY_VERSION = 1
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
TINY_ARCH = {
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
}
VOCAB_SIZE = 512


def chatml_template() -> str:
    return preset_path("chatml.jinja").read_text().strip()


def build_tiny_tokenizer():
    """Train the byte-level BPE tokenizer of ``tiny`` (deterministic; under a second)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = preset_path("tiny_corpus.txt").read_text().splitlines()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = chatml_template()
    return fast


def build_tiny(folder: Path) -> Path:
    """Build ``tiny`` into ``folder`` (safetensors weights, tokenizer, chat template)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_ARCH,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "tunelab_tiny.json").write_text(json.dumps({"version": TINY_VERSION}))
    return publish_folder(tmp, folder)


def tiny_dir() -> Path:
    """Folder of the cached ``tiny`` model, built on first use."""
    folder = models_cache() / "tiny"
    marker = folder / "tunelab_tiny.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == TINY_VERSION:
        return folder
    return build_tiny(folder)
