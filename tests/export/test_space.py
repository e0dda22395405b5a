"""export --format space: the folder's app.py, started on its own, answers like tunelab's greedy generation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("gradio")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space(lora_run, tmp_path_factory):
    from tunelab.export import export

    return export(lora_run, "space", out=tmp_path_factory.mktemp("spaces") / "space").path


def test_the_folder_has_what_a_space_needs(space, lora_run):
    files = {p.name for p in space.iterdir()}
    assert {"README.md", "app.py", "requirements.txt", "space.json", ".gitattributes", "model"} <= files
    header = space.joinpath("README.md").read_text().split("---")[1]
    fields = dict(line.split(": ", 1) for line in header.strip().splitlines())
    assert fields["sdk"] == '"gradio"' and fields["app_file"] == '"app.py"'
    assert fields["title"] == f'"{lora_run.name}"' and fields["sdk_version"].strip('"')[0].isdigit()
    assert any(line.startswith("transformers==") for line in space.joinpath("requirements.txt").read_text().split())
    assert (space / "model" / "config.json").is_file() and list((space / "model").glob("*.safetensors"))
    assert "import tunelab" not in space.joinpath("app.py").read_text()  # a Space does not have tunelab


def test_the_exported_app_answers_like_tunelab(space, lora_run):
    from tunelab.infer import ChatMessage, SamplingParams, load_engine

    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=space, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        client = None
        deadline = time.monotonic() + 240
        while client is None:
            assert proc.poll() is None, proc.stdout.read()
            try:
                client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        _, history = client.predict("Hello there", "Be brief.", 0.0, 1.0, 16, [], api_name="/chat")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    engine = load_engine(str(lora_run), device="cpu")
    ids = engine.encode_chat([ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there")])
    expected = engine.stream(engine.model_ids()[0], ids, SamplingParams(max_new_tokens=16))
    expected_text = "".join(expected)
    from tunelab.evaluate.demo import _text

    assert [m["role"] for m in history] == ["user", "assistant"]
    assert _text(history[1]["content"]) == expected_text.strip()  # the chatbot trims surrounding whitespace
    assert expected_text.strip()  # a real answer, not an empty one
