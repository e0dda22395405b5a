"""A chat app for a model fine-tuned with tunelab, ready to run as a Hugging Face Space.

Written by ``tunelab export RUN --format space``: the merged model sits in ``model/`` beside this
file (transformers' safetensors folder, with the run's tokenizer, chat template and every
turn-ending EOS id in its generation config), and ``space.json`` holds the title and the
default system prompt. Plain transformers + Gradio, no tunelab needed: push the folder to a
Space (``git push`` or ``huggingface-cli upload``) or run ``python app.py`` locally.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import gradio as gr
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

HERE = Path(__file__).resolve().parent
SETTINGS = json.loads((HERE / "space.json").read_text())
tokenizer = AutoTokenizer.from_pretrained(HERE / "model")
model = AutoModelForCausalLM.from_pretrained(HERE / "model", dtype=torch.float32).eval()


def text_of(content) -> str:
    """A chat message's text (Gradio may hand back a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, list | tuple):
        return "".join(text_of(part) for part in content)
    return str(content or "")


def respond(message, system, temperature, top_p, max_tokens, history):
    """Stream the answer to ``message`` after ``history`` (greedy at temperature 0)."""
    if not message or not message.strip():
        yield "", history
        return
    history = [*(history or []), {"role": "user", "content": message}]
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    messages += [{"role": m["role"], "content": text_of(m["content"])} for m in history]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = {**inputs, "streamer": streamer, "max_new_tokens": int(max_tokens), "do_sample": temperature > 0}
    if temperature > 0:
        kwargs.update(temperature=float(temperature), top_p=float(top_p))
    thread = threading.Thread(target=model.generate, kwargs=kwargs)
    thread.start()
    text = ""
    for delta in streamer:
        text += delta
        yield "", [*history, {"role": "assistant", "content": text}]
    thread.join()
    yield "", [*history, {"role": "assistant", "content": text}]


with gr.Blocks(title=SETTINGS["title"]) as demo:
    gr.Markdown(f"## {SETTINGS['title']}\n{SETTINGS.get('description', '')}")
    chat = gr.Chatbot(label=SETTINGS["title"], height=460)
    with gr.Row():
        box = gr.Textbox(placeholder="Message (Enter to send)", show_label=False, scale=8, autofocus=True)
        send = gr.Button("Send", variant="primary", scale=1)
        clear = gr.Button("Clear", scale=1)
    with gr.Accordion("System prompt and sampling", open=False):
        system_box = gr.Textbox(value=SETTINGS.get("system", ""), label="System prompt", lines=2)
        with gr.Row():
            temp = gr.Slider(
                0.0, 2.0, value=SETTINGS.get("temperature", 0.7), step=0.05, label="Temperature (0 = greedy)"
            )
            nucleus = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p")
            length = gr.Slider(1, 2048, value=SETTINGS.get("max_new_tokens", 256), step=1, label="Max new tokens")
    inputs = [box, system_box, temp, nucleus, length, chat]
    box.submit(respond, inputs, [box, chat], api_name="chat")
    send.click(respond, inputs, [box, chat], api_name=False)
    clear.click(lambda: ("", []), None, [box, chat], api_name=False)

if __name__ == "__main__":
    demo.queue().launch()
