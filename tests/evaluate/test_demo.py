"""tunelab demo: the Gradio app answers through gradio_client exactly as tunelab's engine does."""

from __future__ import annotations

import socket

import pytest

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from tunelab.evaluate.demo import _text, build_app, interleave, open_demo_model  # noqa: E402  (gradio is optional)
from tunelab.infer import ChatMessage, SamplingParams  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def greedy(model, messages, max_new_tokens=12) -> str:
    ids = model.engine.encode_chat([ChatMessage(**m) for m in messages])
    return model.engine.generator.generate(ids, SamplingParams(max_new_tokens=max_new_tokens)).text


def test_interleave_advances_every_stream_in_turn():
    steps = list(interleave([iter(["a", "ab", "abc"]), iter(["x"])]))
    assert steps == [["a", ""], ["a", "x"], ["ab", "x"], ["abc", "x"]]


@pytest.fixture()
def noisy_tiny(tiny_path, tmp_path):
    """tiny with seeded noise on every weight, saved as a model folder: it answers differently from tiny."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0 * p.std() * torch.randn(p.shape, generator=gen))
    model.save_pretrained(tmp_path / "noisy")
    AutoTokenizer.from_pretrained(tiny_path).save_pretrained(tmp_path / "noisy")
    return str(tmp_path / "noisy")


def test_compare_app_streams_both_models_and_answers_like_the_engine(noisy_tiny):
    models = [open_demo_model("tiny", device="cpu"), open_demo_model(noisy_tiny, device="cpu")]
    app = build_app(models, system="Be brief.", max_new_tokens=12)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        _, *histories = client.predict("Hello there", "Be brief.", 0.0, 1.0, 12, [], [], api_name="/chat")
    finally:
        app.close()
    asked = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    expected = [greedy(m, asked) for m in models]
    assert expected[0].strip() != expected[1].strip()  # two different models, each answer in its own column
    for history, answer in zip(histories, expected, strict=True):
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert _text(history[0]["content"]) == "Hello there"
        assert _text(history[1]["content"]) == answer.strip()  # the chatbot trims surrounding whitespace
