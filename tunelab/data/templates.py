"""Prompt templates: render a conversation into segments of text marked trained or not.

Rendering to ``(text, trained)`` segments instead of one string is what makes the label mask
exact: each segment is tokenized on its own, so the trained tokens are exactly the assistant
answers plus their end-of-turn token (Ouyang et al., 2022, "Training language models to follow
instructions with human feedback", arXiv:2203.02155: loss on the response only).

Templates (registry :data:`TEMPLATES`, or a path to a Jinja file):

* ``chat`` — the tokenizer's own chat template, i.e. what the model is served with (default).
  Turn boundaries are found by rendering prefixes of the conversation with
  ``apply_chat_template`` (with and without ``add_generation_prompt``) and diffing the strings,
  so no template format (ChatML, Llama 3, Gemma, ...) is hard-coded. The trained part of an
  assistant turn runs up to and including the terminator the template emits (EOS, e.g.
  ``<|im_end|>``), so the model learns to stop; what follows it (a newline) is prompt.
* ``alpaca`` — ``### Instruction:`` / ``### Input:`` / ``### Response:`` (Taori et al., 2023).
* ``qa`` — ``### Question:`` / ``### Answer:``.
* ``path/to/template.jinja`` — a user chat template in the Hugging Face Jinja dialect, handled
  exactly like ``chat``.

A conversation that ends with a user turn renders with the generation prompt (the assistant
header) at the end, untrained: that is the prompt of preference / RL data.

Every template also has a Jinja form (:func:`trained_chat_template`), saved as the chat template
of the trained adapter or model, so chat, serving, reward scoring and every export render
prompts exactly as training did (alpaca runs are served with ``### Instruction:`` prompts, not
with the base model's ChatML).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tunelab.data.formats import RowError
from tunelab.data.types import Example, Message, Segment
from tunelab.errors import DataError


class Template(Protocol):
    name: str

    def render(self, messages: list[Message], extra_input: str | None, tokenizer: Any) -> list[Segment]:
        """Segments of one conversation (``extra_input`` = alpaca's optional input)."""
        ...

    def jinja(self, tokenizer: Any) -> str:
        """A Hugging Face Jinja chat template that renders prompts exactly as :meth:`render` does."""
        ...


def bos_segments(tokenizer: Any) -> list[Segment]:
    """The BOS text the tokenizer would add on its own (templates without one need it)."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos:
        return []
    with_special = tokenizer("a").input_ids
    without = tokenizer("a", add_special_tokens=False).input_ids
    if len(with_special) > len(without) and with_special[0] == tokenizer.bos_token_id:
        return [Segment(bos, False)]
    return []


def merge_input(messages: list[Message], extra_input: str | None) -> list[Message]:
    """Append alpaca's ``input`` to the first user turn (for templates without an Input section)."""
    return Example(messages, None, "", 0, extra_input).conversation()


# --------------------------------------------------------------------------- plain templates


@dataclass(frozen=True)
class PlainTemplate:
    """A ``### Header:`` style template; the answer is followed by EOS (trained)."""

    name: str
    user: str  # "{content}" is the user turn
    assistant: str  # header before the answer
    input: str | None = None  # section for alpaca's input; None = merged into the user turn
    system: str = "{content}\n\n"
    separator: str = "\n\n"  # between an answer's EOS and the next turn

    def render(self, messages: list[Message], extra_input: str | None, tokenizer: Any) -> list[Segment]:
        eos = tokenizer.eos_token
        if not eos:
            raise DataError(f"template '{self.name}': the tokenizer has no eos_token; set one in tokenizer_config.json")
        if self.input is None:
            messages, extra_input = merge_input(messages, extra_input), None
        segments = bos_segments(tokenizer)
        prompt = ""
        for m in messages:
            if m["role"] == "system":
                prompt += self.system.format(content=m["content"])
            elif m["role"] == "user":
                prompt += self.user.format(content=m["content"])
                if extra_input and self.input:
                    prompt += self.input.format(content=extra_input)
                    extra_input = None
            else:
                segments += [Segment(prompt + self.assistant, False), Segment(m["content"], True), Segment(eos, True)]
                prompt = self.separator
        if messages and messages[-1]["role"] != "assistant":
            segments.append(Segment(prompt + self.assistant, False))
        return segments

    def jinja(self, tokenizer: Any) -> str:
        """This template as a Jinja chat template (per-role pieces, so Ollama's TEMPLATE can mirror it).

        Prompts (a conversation ending with a user turn, plus the generation prompt) render to the
        same text as :meth:`render`. The separator after an answer's EOS is emitted with the answer,
        so a conversation that *ends* with an answer renders one untrained separator more than
        training did (like ChatML's newline after ``<|im_end|>``); the trained text is the same.
        The BOS and EOS are written as literal text: they are part of the trained rendering, whatever
        a later loader (GGUF) calls its special tokens.
        """
        eos = tokenizer.eos_token
        if not eos:
            raise DataError(f"template '{self.name}': the tokenizer has no eos_token; set one in tokenizer_config.json")
        bos = "".join(s.text for s in bos_segments(tokenizer))
        system, user = self.system.split("{content}"), self.user.split("{content}")
        return (
            (f"{{{{ {_jinja_str(bos)} }}}}" if bos else "")
            + "{% for message in messages %}"
            + f"{{% if message['role'] == 'system' %}}{_around_content(*system)}"
            + f"{{% elif message['role'] == 'user' %}}{_around_content(*user)}"
            + f"{{% else %}}{_around_content(self.assistant, eos + self.separator)}{{% endif %}}"
            + "{% endfor %}"
            + f"{{% if add_generation_prompt %}}{{{{ {_jinja_str(self.assistant)} }}}}{{% endif %}}"
        )


def _jinja_str(text: str) -> str:
    """A Jinja string literal of ``text`` (Jinja decodes JSON's escapes; non-ASCII stays literal)."""
    return json.dumps(text, ensure_ascii=False)


def _around_content(before: str, after: str) -> str:
    return f"{{{{ {_jinja_str(before)} + message['content'] + {_jinja_str(after)} }}}}"


# --------------------------------------------------------------------------- chat templates


def _special_tokens(tokenizer: Any) -> list[str]:
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            specials.add(str(tok))
    return sorted(specials, key=len, reverse=True)


def split_turn(suffix: str, content: str, tokenizer: Any) -> tuple[str, bool, str]:
    """Split the rendered assistant turn into ``(trained text, append_eos, untrained tail)``.

    The trained text runs up to and including the first EOS after the answer; failing that, the
    first special token (a template whose turn terminator is not EOS); failing that, the turn
    without trailing whitespace, with EOS appended so the model still learns to stop.
    """
    at = suffix.find(content) if content else -1
    if at < 0 and content.strip():
        at = suffix.find(content.strip())
        content = content.strip()
    pos = at + len(content) if at >= 0 else 0
    eos = tokenizer.eos_token
    ends = [suffix.find(eos, pos) + len(eos)] if eos and suffix.find(eos, pos) >= 0 else []
    if not ends:
        ends = [suffix.find(s, pos) + len(s) for s in _special_tokens(tokenizer) if suffix.find(s, pos) >= 0]
    if ends:
        cut = min(ends)
        return suffix[:cut], False, suffix[cut:]
    body = suffix.rstrip()
    return body, True, suffix[len(body):]


@dataclass(frozen=True)
class ChatTemplate:
    """The tokenizer's chat template (``source=None``) or a user Jinja template (``source`` text)."""

    name: str
    source: str | None = None

    def _apply(self, tokenizer: Any, messages: list[Message], generation: bool) -> str:
        try:
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation, chat_template=self.source
            )
        except Exception as err:  # jinja raises plain Exceptions (e.g. "roles must alternate")
            raise RowError("messages", f"the chat template '{self.name}' refused this conversation ({err})",
                           "fix the turn order or use --template alpaca/qa") from None

    def render(self, messages: list[Message], extra_input: str | None, tokenizer: Any) -> list[Segment]:
        messages = merge_input(messages, extra_input)
        segments: list[Segment] = []
        consumed = ""  # template text already turned into segments
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = self._apply(tokenizer, messages[:i], True)
            full = self._apply(tokenizer, messages[: i + 1], False)
            if not prompt.startswith(consumed) or not full.startswith(prompt):
                raise DataError(
                    f"chat template '{self.name}' renders earlier turns differently once later turns are added, "
                    "so the answer boundaries cannot be found by prefix rendering\n"
                    "  fix: use --template alpaca or qa, or a Jinja template file whose turns are prefix-stable"
                )
            answer, append_eos, _tail = split_turn(full[len(prompt):], m["content"], tokenizer)
            segments += [Segment(prompt[len(consumed):], False), Segment(answer, True)]
            if append_eos:
                segments.append(Segment(tokenizer.eos_token, True))
            consumed = prompt + answer
        ends_with_answer = bool(messages) and messages[-1]["role"] == "assistant"
        final = self._apply(tokenizer, messages, not ends_with_answer)
        if not final.startswith(consumed):
            raise DataError(f"chat template '{self.name}' is not prefix-stable; use --template alpaca or qa")
        segments.append(Segment(final[len(consumed):], False))
        return segments

    def jinja(self, tokenizer: Any) -> str:
        """The Jinja source itself: the user's file, or the tokenizer's own template."""
        return self.source if self.source is not None else tokenizer.chat_template


ALPACA = PlainTemplate(
    "alpaca", user="### Instruction:\n{content}\n\n", assistant="### Response:\n", input="### Input:\n{content}\n\n"
)
QA = PlainTemplate("qa", user="### Question:\n{content}\n\n", assistant="### Answer:\n")
TEMPLATES: dict[str, Template] = {"chat": ChatTemplate("chat"), "alpaca": ALPACA, "qa": QA}


def get_template(name: str | Template, tokenizer: Any) -> Template:
    """A registered template, or a Jinja file path.

    Raises:
        DataError: unknown name / missing file, or ``chat`` with a tokenizer that has none.
    """
    if not isinstance(name, str):
        return name
    if name in TEMPLATES:
        if name == "chat" and not getattr(tokenizer, "chat_template", None):
            raise DataError(
                "template 'chat': this tokenizer has no chat template\n"
                "  fix: use --template alpaca or qa, or pass a Jinja template file"
            )
        return TEMPLATES[name]
    path = Path(name)
    if path.is_file():
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: template file is not UTF-8 (byte offset {err.start})") from None
        return ChatTemplate(str(path), source)
    raise DataError(
        f"unknown template '{name}' (not a registered name and no such file)\n"
        f"  fix: use one of {', '.join(TEMPLATES)} or a path to a Jinja chat template file"
    )


def default_system_jinja(system_prompt: str) -> str:
    """Jinja that adds ``system_prompt`` as a system message where the conversation has none.

    Prepended to a chat template it does what ``data.system_prompt`` did in training
    (:func:`render_segments`), so a run trained with a system prompt is served with it.
    """
    message = "{'role': 'system', 'content': " + _jinja_str(system_prompt) + "}"
    return (
        "{% if not messages or messages[0]['role'] != 'system' %}"
        f"{{% set messages = [{message}] + messages %}}{{% endif %}}"
    )


def trained_chat_template(template: str | Template, tokenizer: Any, system_prompt: str | None = None) -> str | None:
    """The Jinja chat template equivalent to training with ``template`` (and ``system_prompt``).

    Saved as the chat template of a trained adapter / model and as ``RUN/chat_template.jinja``.
    None when there is nothing to save: ``chat`` with a tokenizer that has no chat template (a
    run on plain text never rendered a conversation).
    """
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        return None
    source = get_template(template, tokenizer).jinja(tokenizer)
    return default_system_jinja(system_prompt) + source if system_prompt else source


def render_segments(
    example: Example,
    tokenizer: Any,
    template: str | Template = "chat",
    system_prompt: str | None = None,
    train_on_prompt: bool = False,
) -> list[Segment]:
    """Render one example into text segments marked trained / not trained.

    Conversations: every assistant turn is trained (answer + EOS); all else is prompt. A
    conversation ending with an assistant turn therefore renders "prompt + completion", which
    is what preference data needs; one ending with a user turn ends with the generation prompt.
    Text examples (continued pre-training): the text and EOS, all trained.

    Args:
        example: a normalized example.
        tokenizer: a Hugging Face tokenizer (its chat template and EOS are used).
        template: a name in :data:`TEMPLATES`, a Jinja file path, or a Template object.
        system_prompt: added as a system message where the conversation has none.
        train_on_prompt: mark every segment trained.

    Returns:
        Non-empty segments, in order; their texts concatenated are the rendered example.
    """
    if example.text is not None:
        segments = [*bos_segments(tokenizer), Segment(example.text, True), Segment(tokenizer.eos_token or "", True)]
    else:
        messages = [dict(m) for m in example.messages or []]
        if system_prompt and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": system_prompt})
        segments = get_template(template, tokenizer).render(messages, example.input, tokenizer)
    if train_on_prompt:
        segments = [Segment(s.text, True) for s in segments]
    return [s for s in segments if s.text]


def render_prompt(messages: list[Message], tokenizer: Any, template: str | Template = "chat",
                  system_prompt: str | None = None) -> str:
    """The prompt text of a conversation ending with a user turn (up to the assistant header)."""
    example = Example(messages, None, "", 0)
    return "".join(s.text for s in render_segments(example, tokenizer, template, system_prompt))
