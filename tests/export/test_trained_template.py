"""A run trained with ``data.template: alpaca`` (or ``qa``) is chatted with, served, scored and
exported with that template, not with the base model's ChatML (issue 9, criterion 4).

One short real training run per template on the tiny model; then the rendered prompt and the
greedy answer are compared across ``tunelab chat``, the OpenAI-compatible server, the exported
Hugging Face folder and the exported GGUF (read back by transformers); the bitsandbytes folder's
tokenizer renders the same prompt, and the Ollama Modelfile's Go TEMPLATE is rendered.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

HEADERS = {"alpaca": "### Instruction:\n", "qa": "### Question:\n"}
QUESTION = "What color is the cat number 3?"
MESSAGES = [{"role": "user", "content": QUESTION}]
NEW_TOKENS = 12


@pytest.fixture(scope="module", params=["alpaca", "qa"])
def trained(request, tmp_path_factory, tiny_path) -> tuple[str, Path]:
    from tunelab.config import load_config
    from tunelab.train.loop import train

    root = tmp_path_factory.mktemp(f"run-{request.param}")
    data = root / "sft.jsonl"
    rows = [{"instruction": f"What color is the cat number {i}?", "output": "The cat is red."} for i in range(16)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(None, [
        "model.name=tiny", f"data.path={data}", f"data.template={request.param}", "data.max_length=64",
        "adapter.dropout=0.0", "training.precision=fp32", "training.max_steps=3", "training.micro_batch_size=4",
        "training.learning_rate=0.02", "training.lr_scheduler=constant", "training.eval_every=0",
        f"output_dir={root}", "name=run",
    ])
    result = train(config)
    return request.param, Path(result.run_dir)


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory) -> dict[str, Path]:
    from tunelab.export import export

    _, run = trained
    out = tmp_path_factory.mktemp("exports")
    return {
        "hf": export(run, "hf", out=out / "hf").path,
        "gguf": export(run, "gguf", out=out / "gguf", quant="f32").path,
        "bnb": export(run, "bnb-int8", out=out / "bnb").path,
    }


def _greedy(model, ids: list[int], eos: list[int]) -> list[int]:
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=NEW_TOKENS, eos_token_id=eos, pad_token_id=eos[0])
    return out[0, len(ids):].tolist()


def test_run_folder_and_adapter_carry_the_trained_template(trained):
    from tunelab.data.templates import render_prompt
    from tunelab.models.load import load_tokenizer

    name, run = trained
    saved = (run / "chat_template.jinja").read_text()
    tokenizer = load_tokenizer(run / "adapter")
    assert tokenizer.chat_template == saved
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith(HEADERS[name]) and "<|im_start|>" not in prompt
    assert prompt == render_prompt(MESSAGES, tokenizer, name)


def test_chat_serve_and_exports_render_and_answer_alike(trained, exports, capsys):
    from fastapi.testclient import TestClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.cli.main import main
    from tunelab.export.targets import gguf_eos_ids
    from tunelab.infer import SamplingParams, load_engine
    from tunelab.infer.chat import ChatSession
    from tunelab.infer.engine import ChatMessage
    from tunelab.serve import ServerSettings, create_app

    name, run = trained
    engine = load_engine(str(run), device="cpu")
    model_id = engine.model_ids()[0]
    prompt_ids = engine.encode_chat([ChatMessage("user", QUESTION)])
    prompt = engine.tokenizer.decode(prompt_ids)
    assert prompt.startswith(HEADERS[name])

    session = ChatSession(engine, model_id, SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0))
    chat = session.send(QUESTION).collect()
    assert main(["chat", str(run), "--prompt", QUESTION, "--temperature", "0", "--max-new-tokens",
                 str(NEW_TOKENS), "--device", "cpu"]) in (0, None)
    assert capsys.readouterr().out.strip() == chat.text.strip()

    with TestClient(create_app(engine, ServerSettings())) as client:
        reply = client.post("/v1/chat/completions", json={
            "model": model_id, "messages": MESSAGES, "temperature": 0, "max_tokens": NEW_TOKENS}).json()
    assert reply["usage"]["prompt_tokens"] == len(prompt_ids)
    assert reply["choices"][0]["message"]["content"] == chat.text

    eos = sorted(engine.generator.eos)
    hf_tok = AutoTokenizer.from_pretrained(exports["hf"])
    hf_model = AutoModelForCausalLM.from_pretrained(exports["hf"], dtype=torch.float32).eval()
    gguf = exports["gguf"]
    gguf_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    for tok in (hf_tok, gguf_tok, AutoTokenizer.from_pretrained(exports["bnb"])):
        assert tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == prompt
    assert set(gguf_eos_ids(gguf)) <= set(eos)
    answers = {
        "chat": chat.tokens,
        "hf": _greedy(hf_model, prompt_ids, eos),
        "gguf": _greedy(gguf_model, prompt_ids, eos),
    }
    assert answers["hf"] == answers["chat"] and answers["gguf"] == answers["chat"], answers
    assert len(answers["chat"]) >= 2  # a real answer, not an immediate stop


def test_modelfile_template_renders_the_trained_prompt(trained, exports):
    from tunelab.export.gotemplate import ollama_messages, render_go_template
    from tunelab.export.modelfile import read_modelfile_template
    from tunelab.models.load import load_tokenizer

    name, run = trained
    template, stops = read_modelfile_template(exports["gguf"].parent / "Modelfile")
    tokenizer = load_tokenizer(run / "adapter")
    rendered = render_go_template(template, ollama_messages(MESSAGES))
    assert rendered == tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == f"{HEADERS[name]}{QUESTION}\n\n{'### Response:' if name == 'alpaca' else '### Answer:'}\n"
    assert tokenizer.eos_token in stops


def test_reward_rendering_reads_the_run_template(trained):
    """``reward score`` renders with the loaded run's config and tokenizer: the same prompt ids as chat."""
    from tunelab.data.preference import Renderer
    from tunelab.infer.engine import ChatMessage, Engine
    from tunelab.models.load import load_run

    _, run = trained
    loaded = load_run(run, device="cpu")
    renderer = Renderer(loaded.tokenizer, loaded.config.data)
    engine = Engine(loaded.model, loaded.tokenizer, {"run": "default"})
    assert renderer.prompt_ids(MESSAGES) == engine.encode_chat([ChatMessage("user", QUESTION)])


def test_a_run_saved_before_the_template_file_is_rebuilt_from_its_config(tmp_path, tiny_path):
    """Runs trained before RUN/chat_template.jinja existed carry the base's ChatML; config.data says alpaca."""
    from transformers import AutoTokenizer

    from tests.export.conftest import make_run
    from tunelab.config import load_config, save_config
    from tunelab.export import export
    from tunelab.models.load import load_run

    run = make_run(tmp_path, "old")  # saved without data=..., like an older tunelab
    config = load_config(run / "config.yaml")
    save_config(config.model_copy(update={"data": config.data.model_copy(update={"template": "alpaca"})}),
                run / "config.yaml")
    assert not (run / "chat_template.jinja").exists()
    copied = export(run, "adapter", out=tmp_path / "adapter").path
    for tokenizer in (load_run(run, device="cpu").tokenizer, AutoTokenizer.from_pretrained(copied)):
        prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
        assert prompt == f"### Instruction:\n{QUESTION}\n\n### Response:\n"
