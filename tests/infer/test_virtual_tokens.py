"""Prompt-tuning and prefix-tuning runs are chatted with and served unmerged (issue 9, criterion 8).

The reference is peft's own model: greedy decoding by full forward passes of the ``PeftModel``
(its forward adds the virtual tokens / the learned prefix on every call, exactly as in training).
For prompt tuning, peft's ``generate(use_cache=False)`` is checked too. peft 0.21's cached
``generate`` is not a reference on transformers 5.24 (whose models take the cache as ``cache``):
for prompt tuning it agrees only on the first token, and for prefix tuning it departs from peft's
own forward after the first token with or without the cache (measured on this base).
The base is the tiny model with weights scaled up (std 0.15), so greedy answers depend on the
prompt and on the adapter instead of repeating one token.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

QUESTION = "What color is the cat number 3?"
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def sharp_base(tmp_path_factory, tiny_path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.15)
    folder = tmp_path_factory.mktemp("sharp-tiny")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_path).save_pretrained(folder)
    return folder


def _make_run(root: Path, base: Path, kind: str) -> Path:
    from transformers import AutoModelForCausalLM

    from tunelab.config import load_config, save_config
    from tunelab.models.adapters import attach_adapter
    from tunelab.models.load import load_tokenizer, save_trained

    config = load_config(None, [f"model.name={base}", f"adapter.type={kind}", "adapter.num_virtual_tokens=6",
                                "adapter.dropout=0.0", f"name={kind}", f"output_dir={root}"])
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = attach_adapter(model, config.adapter, str(base), gradient_checkpointing=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in peft_model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator))
    run = root / kind
    save_trained(peft_model, load_tokenizer(base), run / "adapter", kind, data=config.data)
    save_config(config, run / "config.yaml")
    return run


@pytest.fixture(scope="module", params=["prompt_tuning", "prefix_tuning"])
def run(request, sharp_base, tmp_path_factory) -> Path:
    return _make_run(tmp_path_factory.mktemp("runs"), sharp_base, request.param)


@pytest.fixture(scope="module")
def engine(run):
    from tunelab.infer import load_engine

    return load_engine(str(run), device="cpu")


def _prompt(engine) -> list[int]:
    from tunelab.infer.engine import ChatMessage

    return engine.encode_chat([ChatMessage("user", QUESTION)])


@torch.no_grad()
def _peft_greedy(model, prompt: list[int], eos) -> list[int]:
    """Greedy decoding by full forward passes of peft's own model (no cache)."""
    ids, out = list(prompt), []
    for _ in range(NEW_TOKENS):
        token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        out.append(token)
        if token in eos:
            break
        ids.append(token)
    return out


def test_chat_equals_peft_and_differs_from_the_base(run, engine, capsys):
    from tunelab.cli.main import main
    from tunelab.infer import SamplingParams
    from tunelab.infer.chat import ChatSession

    model_id, base_id = engine.model_ids()
    prompt, eos = _prompt(engine), engine.generator.eos
    expected = _peft_greedy(engine.model, prompt, eos)
    with engine.model.disable_adapter():
        base_expected = _peft_greedy(engine.model, prompt, eos)
    assert expected != base_expected  # the virtual tokens change the answer

    params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0)
    answer = ChatSession(engine, model_id, params).send(QUESTION).collect()
    assert answer.tokens == expected
    assert ChatSession(engine, base_id, params).send(QUESTION).collect().tokens == base_expected
    again = ChatSession(engine, model_id, params).send(QUESTION).collect()  # from the context cache
    assert again.timings.cached_prompt_tokens > 0 and again.tokens == expected

    assert main(["chat", str(run), "--prompt", QUESTION, "--temperature", "0",
                 "--max-new-tokens", str(NEW_TOKENS), "--device", "cpu"]) in (0, None)
    assert capsys.readouterr().out.strip() == answer.text.strip()

    if "prompt_tuning" in run.name:
        x = torch.tensor([prompt])
        out = engine.model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, use_cache=False,
                                    max_new_tokens=NEW_TOKENS, eos_token_id=sorted(eos), pad_token_id=0)
        assert out[0, len(prompt):].tolist()[: len(expected)] == expected


def test_served_unmerged_through_the_openai_api(engine):
    from fastapi.testclient import TestClient

    from tunelab.infer import SamplingParams
    from tunelab.infer.chat import ChatSession
    from tunelab.serve import ServerSettings, create_app

    model_id = engine.model_ids()[0]
    params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0)
    expected = ChatSession(engine, model_id, params).send(QUESTION).collect().text
    with TestClient(create_app(engine, ServerSettings())) as client:
        reply = client.post("/v1/chat/completions", json={
            "model": model_id, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
            "max_tokens": NEW_TOKENS}).json()
    assert reply["choices"][0]["message"]["content"] == expected


def test_logprobs_skip_the_virtual_tokens(engine):
    ids = _prompt(engine)
    rows = engine.logprobs(engine.model_ids()[0], ids)
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0, -len(ids):]
    expected = torch.log_softmax(logits[:-1].float(), -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert [r.token_id for r in rows] == ids
    assert torch.allclose(torch.tensor([r.logprob for r in rows[1:]]), expected, atol=1e-5)


def test_export_hf_refuses_and_adapter_format_copies(run, tmp_path, capsys):
    import json

    from tunelab.cli.main import main
    from tunelab.errors import ConfigError
    from tunelab.export import export

    with pytest.raises(ConfigError, match="cannot be merged") as err:
        export(run, "hf", out=tmp_path / "hf")
    assert f"tunelab export {run} --format adapter" in str(err.value) and f"tunelab chat {run}" in str(err.value)
    assert main(["export", str(run), "--format", "gguf", "--out", str(tmp_path / "gguf")]) == 2
    assert "--format adapter" in capsys.readouterr().err
    copied = export(run, "adapter", out=tmp_path / "adapter").path
    assert json.loads((copied / "adapter_config.json").read_text())["peft_type"] == run.name.upper()
    assert (copied / "chat_template.jinja").read_text() == (run / "chat_template.jinja").read_text()


def test_verify_of_an_unmergeable_run_points_at_chat_not_back_at_export(run, tmp_path, capsys):
    """No pair of error messages points at each other: export hf → --format adapter → --verify → chat."""
    from tunelab.cli.main import main

    code = main(["export", str(run), "--format", "adapter", "--out", str(tmp_path / "adapter"), "--verify"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be merged" in err and f"tunelab chat {run}" in err
    assert "--format hf" not in err


def test_as_a_base_model_it_says_to_chat_or_train_from_the_base(run):
    """``model.name=runs/NAME`` of such a run: the advice is about building on it, not about export formats."""
    from tunelab.models.merge import UnmergeableError
    from tunelab.models.resolve import resolve_model

    with pytest.raises(UnmergeableError) as err:
        resolve_model(str(run))
    message = str(err.value)
    assert f"tunelab chat {run}" in message and "train from its base model" in message and "--format" not in message


def test_batched_generation_refuses_virtual_tokens(engine):
    from tunelab.errors import ServeError
    from tunelab.infer import generate_batch

    with pytest.raises(ServeError, match="one prompt at a time"):
        generate_batch(engine.model, engine.tokenizer, [_prompt(engine)] * 2)
    with engine.model.disable_adapter():  # the base model alone batches as before
        assert len(generate_batch(engine.model, engine.tokenizer, [_prompt(engine)] * 2)) == 2
