"""A live server on tiny (+ one LoRA adapter) in a uvicorn thread, and an openai client for it."""

from __future__ import annotations

import pytest

API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory, tiny_path):
    """A LoRA adapter on tiny with random (non-zero) B, so it really changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(base, config)
    folder = tmp_path_factory.mktemp("lora")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def engine(lora_dir):
    from tunelab.infer import load_engine

    return load_engine("tiny", {"lora": str(lora_dir)}, device="cpu")


@pytest.fixture(scope="session")
def server(engine):
    from tunelab.serve import ServerSettings, ServerThread, create_app

    settings = ServerSettings(api_key=API_KEY, max_tokens_limit=64, max_body_bytes=20_000)
    with ServerThread(create_app(engine, settings)) as srv:
        yield srv


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture()
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
