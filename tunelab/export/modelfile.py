"""Ollama ``Modelfile``: the Go-template TEMPLATE and the stop parameters, from the chat template.

The Jinja template is first reduced to a :class:`~tunelab.data.chat_layout.ChatLayout` by
rendering it with sentinels; the layout is then written as a Go template over Ollama's
``.Messages`` (https://github.com/ollama/ollama/blob/main/docs/template.md). Stops are the
turn terminator, the EOS token and the marker of the next user turn, so ``ollama run`` stops
where the trained model stops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunelab.data.chat_layout import ChatLayout, TemplateError, analyse_template


def _literal(text: str) -> str:
    """Go-template literal text; ``{{`` cannot appear raw, so such text becomes a string action."""
    return text if "{{" not in text else "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def go_template(layout: ChatLayout, *, drop_header: bool) -> str:
    """The layout as a Go template over ``.Messages`` (no ``{{-`` trimming: every byte is literal).

    Args:
        layout: the analysed chat template.
        drop_header: leave the header (BOS) out because llama.cpp adds BOS itself
            (``tokenizer.ggml.add_bos_token``); writing it too would double it.
    """
    role_blocks = []
    for i, role in enumerate(("system", "user", "assistant")):
        keyword = "if" if i == 0 else "else if"
        role_blocks.append(
            f'{{{{ {keyword} eq $m.Role "{role}" }}}}{_literal(layout.prefix[role])}{{{{ $m.Content }}}}'
            f"{_literal(layout.suffix[role])}"
        )
    default = ""
    if layout.default_system:
        default = f'{{{{ if and (eq $i 0) (ne $m.Role "system") }}}}{_literal(layout.default_system)}{{{{ end }}}}'
    return (
        ("" if drop_header else _literal(layout.header))
        + "{{ range $i, $m := .Messages }}"
        + default
        + "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        + "".join(role_blocks)
        + "{{ end }}"
        + f'{{{{ if and $last (ne $m.Role "assistant") }}}}{_literal(layout.generation_prompt)}{{{{ end }}}}'
        + "{{ end }}"
    )


def stop_strings(layout: ChatLayout | None, eos_tokens: list[str]) -> list[str]:
    """Turn terminator, EOS tokens and the next user-turn marker, unique, in that order."""
    stops: list[str] = []
    candidates = [layout.turn_terminator()] if layout else []
    candidates += eos_tokens
    candidates += [layout.next_turn_marker()] if layout else []
    for s in candidates:
        if s and s not in stops:
            stops.append(s)
    return stops


@dataclass(frozen=True)
class Modelfile:
    """What is written to ``Modelfile``; ``text`` is the file itself."""

    gguf_name: str
    template: str
    stops: list[str]
    drop_header: bool

    @property
    def text(self) -> str:
        lines = [f"FROM ./{self.gguf_name}", f'TEMPLATE """{self.template}"""']
        lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in self.stops]
        lines.append("PARAMETER temperature 0")
        return "\n".join(lines) + "\n"


def build_modelfile(tokenizer, gguf_name: str, eos_tokens: list[str], *, adds_bos: bool) -> Modelfile:
    """Translate the tokenizer's chat template into an Ollama Modelfile.

    Raises:
        TemplateError: the template is not a per-role concatenation or contains ``\"\"\"``.
    """
    try:
        layout = analyse_template(tokenizer)
    except TemplateError as err:
        raise TemplateError(
            f"cannot translate the chat template into an Ollama TEMPLATE: {err}\n"
            "  fix: export with --format gguf --no-modelfile and write the TEMPLATE by hand "
            "(https://github.com/ollama/ollama/blob/main/docs/template.md)"
        ) from None
    template = go_template(layout, drop_header=adds_bos and bool(layout.header))
    if '"""' in template:
        raise TemplateError('the chat template contains """, which a Modelfile TEMPLATE cannot hold')
    return Modelfile(gguf_name, template, stop_strings(layout, eos_tokens), adds_bos and bool(layout.header))


def read_modelfile_template(path: Path) -> tuple[str, list[str]]:
    """``(TEMPLATE, stops)`` of a Modelfile we wrote (used by ``--verify``)."""
    text = path.read_text()
    start = text.index('TEMPLATE """') + len('TEMPLATE """')
    template = text[start : text.index('"""', start)]
    stops = [json.loads(line.split(" ", 2)[2]) for line in text.splitlines() if line.startswith("PARAMETER stop ")]
    return template, stops
