"""``tunelab demo``: a Gradio chat app on tunelab's generation engine, one model or two side by side.

Why a demo at all: people judge a fine-tune by talking to it, and a side-by-side view of the base
and the fine-tune on the same prompt shows what the numbers of a suite or an arena summarize.
The app streams tokens from :meth:`tunelab.infer.Engine.stream` (KV cache, the run's chat
template and EOS, the measured precision), has a system prompt and sampling controls
(temperature, top-p, max new tokens; temperature 0 is greedy), and with two models streams both
answers in turns, so they grow side by side on one CPU. Its ``/chat`` endpoint answers
``gradio_client`` (tests/evaluate/test_demo.py). ``tunelab export RUN --format space`` writes the
same app for a Hugging Face Space on plain transformers (:mod:`tunelab.export.space`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tunelab.infer.types import SamplingParams


@dataclass
class DemoModel:
    """A loaded engine and the id it serves the model (a run's adapter, or the model) under."""

    label: str
    engine: object
    model_id: str


def open_demo_model(spec: str, *, device: str = "auto") -> DemoModel:
    """Load a model name, folder, ``.gguf`` file or run folder (with its adapter) for the demo."""
    from tunelab.infer import load_engine

    engine = load_engine(spec, device=device)
    model_id = engine.model_ids()[0]
    return DemoModel(model_id, engine, model_id)


def _text(content) -> str:
    """A chat message's text (gradio may hand back a list of parts instead of a string)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, list | tuple):
        return "".join(_text(part) for part in content)
    return str(content or "")


def conversation(history: Sequence[dict], system: str) -> list:
    """The engine's messages: an optional system prompt, then the chat so far."""
    from tunelab.infer import ChatMessage

    messages = [ChatMessage("system", system.strip())] if system and system.strip() else []
    return messages + [ChatMessage(m["role"], _text(m["content"])) for m in history]


def answer_stream(model: DemoModel, history: Sequence[dict], system: str, params: SamplingParams) -> Iterator[str]:
    """The answer so far after each streamed delta (the last one is the whole answer)."""
    ids = model.engine.encode_chat(conversation(history, system))
    text = ""
    for delta in model.engine.stream(model.model_id, ids, params):
        text += delta
        yield text


def interleave(streams: Sequence[Iterator[str]]) -> Iterator[list[str]]:
    """Advance each stream in turn; yield every stream's latest text after each step."""
    texts = [""] * len(streams)
    live = list(range(len(streams)))
    while live:
        for i in list(live):
            try:
                texts[i] = next(streams[i])
            except StopIteration:
                live.remove(i)
                continue
            yield list(texts)


def respond(models: Sequence[DemoModel], message: str, system: str, params: SamplingParams, histories):
    """Yield ``("", history_1, ..., history_k)`` as the answers stream (the textbox is cleared)."""
    if not message or not message.strip():
        yield ("", *histories)
        return
    asked = [[*(h or []), {"role": "user", "content": message}] for h in histories]
    streams = [answer_stream(m, h, system, params) for m, h in zip(models, asked, strict=True)]
    answers = [""] * len(models)
    for answers in interleave(streams):
        yield ("", *[[*h, {"role": "assistant", "content": a}] for h, a in zip(asked, answers, strict=True)])
    if not any(answers):  # nothing streamed (an immediate EOS): still show the empty turns
        yield ("", *[[*h, {"role": "assistant", "content": ""}] for h in asked])


def build_app(
    models: Sequence[DemoModel],
    *,
    system: str = "",
    temperature: float = 0.7,
    top_p: float = 0.95,
    max_new_tokens: int = 256,
    title: str | None = None,
):
    """The Gradio Blocks app: one chat column per model, a shared prompt, system prompt and sampling controls."""
    import gradio as gr

    names = " vs ".join(m.label for m in models)
    with gr.Blocks(title=title or f"tunelab demo: {names}") as app:
        gr.Markdown(f"## {title or names}\nAnswers stream from tunelab's engine; temperature 0 is greedy.")
        with gr.Row():
            chats = [gr.Chatbot(label=m.label, height=460) for m in models]
        with gr.Row():
            box = gr.Textbox(placeholder="Message (Enter to send)", show_label=False, scale=8, autofocus=True)
            send = gr.Button("Send", variant="primary", scale=1)
            clear = gr.Button("Clear", scale=1)
        with gr.Accordion("System prompt and sampling", open=False):
            system_box = gr.Textbox(value=system, label="System prompt", lines=2)
            with gr.Row():
                temp = gr.Slider(0.0, 2.0, value=temperature, step=0.05, label="Temperature (0 = greedy)")
                nucleus = gr.Slider(0.05, 1.0, value=top_p, step=0.05, label="Top-p")
                length = gr.Slider(1, 2048, value=max_new_tokens, step=1, label="Max new tokens")

        def chat(message, system_prompt, temperature, top_p, max_tokens, *histories):
            params = SamplingParams(
                max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p) or 1.0
            )
            yield from respond(models, message, system_prompt, params, histories)

        inputs = [box, system_box, temp, nucleus, length, *chats]
        box.submit(chat, inputs, [box, *chats], api_name="chat")
        send.click(chat, inputs, [box, *chats], api_name=False)
        clear.click(lambda: ("", *[[] for _ in chats]), None, [box, *chats], api_name=False)
    return app
