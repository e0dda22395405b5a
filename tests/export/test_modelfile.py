"""Ollama Modelfile: the Go renderer on hand-computed cases, and Jinja → Go translation equivalence."""

from __future__ import annotations

import pytest

from tunelab.data.chat_layout import TemplateError, analyse_template, render_jinja, sample_conversations
from tunelab.export.gotemplate import ollama_messages, render_go_template
from tunelab.export.modelfile import build_modelfile, read_modelfile_template

LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + m.content"
    " + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>"
    "\n\n' }}{% endif %}"
)
ALPACA = (
    "{% for m in messages %}{% if m.role == 'system' %}{{ m.content + '\n\n' }}{% elif m.role == 'user' %}"
    "{{ '### Instruction:\n' + m.content + '\n\n' }}{% else %}{{ '### Response:\n' + m.content + '</s>\n\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)
# Gemma-style: the system prompt is folded into the first user turn; not a per-role concatenation.
FOLDED = (
    "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
    "{% if loop.index0 == 1 and messages[0].role == 'system' %}"
    "{{ '<u>' + messages[0].content + ' ' + m.content + '</u>' }}"
    "{% else %}{{ '<' + m.role[0] + '>' + m.content + '</' + m.role[0] + '>' }}{% endif %}{% endfor %}"
)


def test_go_renderer_hand_computed():
    template = (
        '{{- range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}'
        '[{{ $i }}:{{ .Role }}]{{ if eq $m.Role "user" "system" }}U{{ else if ne $m.Role "x" }}A{{ else }}X{{ end }}'
        '{{ if and $last (not (eq .Role "assistant")) }} LAST{{ end }}\n{{- end }}'
        '{{ "{{literal}}" }} {{ len .Messages }} {{ (index .Messages 0).Content }}'
    )
    msgs = [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]
    expected = "[0:system]U[1:assistant]A[2:user]U LAST{{literal}} 3 s"
    assert render_go_template(template, ollama_messages(msgs)) == expected


def test_go_renderer_trims_and_scopes():
    assert render_go_template("a  {{- if true -}}  b  {{- end }} c", {}) == "ab c"
    assert render_go_template('{{ $x := "o" }}{{ if true }}{{ $x = "n" }}{{ end }}{{ $x }}', {}) == "n"
    with pytest.raises(TemplateError, match="undefined variable"):
        render_go_template("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", {})


def _tokenizer_with(tiny_tokenizer, template: str):
    tok = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("name", ["chatml", "llama3", "alpaca"])
def test_modelfile_template_renders_like_jinja(tiny_tokenizer, name):
    template = {"chatml": tiny_tokenizer.chat_template, "llama3": LLAMA3, "alpaca": ALPACA}[name]
    tok = _tokenizer_with(tiny_tokenizer, template)
    modelfile = build_modelfile(tok, "m.gguf", [tok.eos_token], adds_bos=False)
    conversations = sample_conversations() + [([{"role": "user", "content": "multi\nline {{ not go }} text"}], True)]
    for messages, gen in conversations:
        if gen != (messages[-1]["role"] != "assistant"):
            continue  # Ollama appends the generation prompt exactly when the last turn is not the assistant's
        assert render_go_template(modelfile.template, ollama_messages(messages)) == render_jinja(tok, messages, gen)


def test_chatml_layout_and_stops(tiny_tokenizer, tmp_path):
    layout = analyse_template(tiny_tokenizer)
    assert layout.prefix["user"] == "<|im_start|>user\n" and layout.suffix["assistant"] == "<|im_end|>\n"
    assert layout.default_system == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert layout.header == "" and layout.generation_prompt == "<|im_start|>assistant\n"
    modelfile = build_modelfile(tiny_tokenizer, "run-f16.gguf", ["<|im_end|>"], adds_bos=False)
    (tmp_path / "Modelfile").write_text(modelfile.text)
    template, stops = read_modelfile_template(tmp_path / "Modelfile")
    assert template == modelfile.template and stops == ["<|im_end|>", "<|im_start|>user"]
    assert modelfile.text.startswith("FROM ./run-f16.gguf\n")


def test_llama3_header_dropped_when_llama_cpp_adds_bos(tiny_tokenizer):
    tok = _tokenizer_with(tiny_tokenizer, LLAMA3)
    layout = analyse_template(tok)
    assert layout.header == tok.bos_token and layout.turn_terminator() == "<|eot_id|>"
    modelfile = build_modelfile(tok, "m.gguf", [tok.eos_token], adds_bos=True)
    messages = [{"role": "user", "content": "hi"}]
    go = render_go_template(modelfile.template, ollama_messages(messages))
    assert tok.bos_token + go == render_jinja(tok, messages, True)


def test_untranslatable_template_fails_clearly(tiny_tokenizer):
    tok = _tokenizer_with(tiny_tokenizer, FOLDED)
    with pytest.raises(TemplateError, match="cannot translate the chat template into an Ollama TEMPLATE"):
        build_modelfile(tok, "m.gguf", ["<|im_end|>"], adds_bos=False)
