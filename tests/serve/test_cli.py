"""``tunelab serve`` and ``tunelab chat`` as real processes: graceful shutdown, one-shot chat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from tunelab.serve.run import free_port

CLI = [sys.executable, "-m", "tunelab.cli.main"]


def test_sigterm_finishes_the_in_flight_stream(tmp_path):
    port = free_port()
    env = {**os.environ, "TUNELAB_API_KEY": "k"}
    proc = subprocess.Popen([*CLI, "serve", "tiny", "--port", str(port), "--device", "cpu"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401  # key from the env var
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 60,
                "temperature": 0, "stream": True}
        events = []
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                          headers={"Authorization": "Bearer k"}, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 2:
                        proc.send_signal(signal.SIGTERM)  # mid-stream
        assert events[-1] == "[DONE]"
        finals = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1]]
        assert finals[-1] == "length" and len(events) >= 60  # every token arrived after the signal
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown, so the status is -15.
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_chat_prompt_prints_the_greedy_answer(engine):
    out = subprocess.run([*CLI, "chat", "tiny", "--prompt", "hello, what is a list", "--temperature", "0",
                          "--max-new-tokens", "8", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    from tunelab.infer import ChatMessage, SamplingParams

    prompt = engine.encode_chat([ChatMessage("user", "hello, what is a list")])
    expected = engine.stream("tiny", prompt, SamplingParams(max_new_tokens=8)).collect().text
    assert out.stdout == expected + "\n"


def test_bad_adapter_flag_is_a_clear_error():
    out = subprocess.run([*CLI, "serve", "tiny", "--adapter", "nopath"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "NAME=PATH" in out.stderr
