"""The Jinja form of each training template renders what training rendered (issue 9, criterion 4).

Checked three ways on the tiny tokenizer: the prompt text of every sample conversation equals
the training prompt (:func:`render_prompt`); training again with ``data.template=chat`` on the
saved template gives the same trained tokens (answers + EOS); and the template is a per-role
concatenation, so the Ollama Modelfile can mirror it.
"""

from __future__ import annotations

import pytest

from tunelab.data.chat_layout import analyse_template, sample_conversations
from tunelab.data.templates import render_prompt, render_segments, trained_chat_template
from tunelab.data.types import Example

TURNS = [
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": 'Quote "this" \\ and {{ braces }}, é ✓ 🙂\n\tend'},
]


def _with_template(tokenizer, source: str):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = source
    return tok


def _prompts():
    for messages, gen in sample_conversations():
        if gen:
            yield messages
    yield TURNS
    yield [{"role": "system", "content": "Be exact."}, *TURNS]


@pytest.mark.parametrize("name", ["alpaca", "qa", "chat"])
@pytest.mark.parametrize("system_prompt", [None, "You answer in one word."])
def test_saved_template_renders_the_training_prompt(tiny_tokenizer, name, system_prompt):
    tok = _with_template(tiny_tokenizer, trained_chat_template(name, tiny_tokenizer, system_prompt))
    for messages in _prompts():
        expected = render_prompt(messages, tiny_tokenizer, name, system_prompt)
        got = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert got == expected
    if name == "alpaca":
        assert "### Instruction:\nWhat is two plus two?\n\n### Response:\n" in got
    without_system = tok.apply_chat_template(TURNS, tokenize=False, add_generation_prompt=True)
    assert without_system.count(system_prompt) == 1 if system_prompt else "word" not in without_system


@pytest.mark.parametrize("name", ["alpaca", "qa"])
def test_training_on_the_saved_template_trains_the_same_tokens(tiny_tokenizer, name):
    """A run used as the base of the next one (template ``chat``) trains exactly the same answer tokens."""
    tok = _with_template(tiny_tokenizer, trained_chat_template(name, tiny_tokenizer))
    conversation = [*TURNS, {"role": "assistant", "content": "Six."}]
    plain = render_segments(Example(conversation, None, "", 0), tiny_tokenizer, name)
    again = render_segments(Example(conversation, None, "", 0), tok, "chat")
    eos = tiny_tokenizer.eos_token
    trained = ["".join(s.text for s in segments if s.trained) for segments in (plain, again)]
    assert trained == [f"Four.{eos}Six.{eos}"] * 2
    assert "".join(s.text for s in again) == "".join(s.text for s in plain) + "\n\n"  # the separator after the EOS


@pytest.mark.parametrize("name", ["alpaca", "qa"])
def test_saved_template_is_a_per_role_layout(tiny_tokenizer, name):
    tok = _with_template(tiny_tokenizer, trained_chat_template(name, tiny_tokenizer, "Sys."))
    layout = analyse_template(tok)
    header = {"alpaca": "### Instruction:\n", "qa": "### Question:\n"}[name]
    assert layout.prefix["user"] == header and layout.suffix["user"] == "\n\n"
    assert layout.suffix["assistant"] == tiny_tokenizer.eos_token + "\n\n"
    assert layout.turn_terminator() == tiny_tokenizer.eos_token
    assert layout.default_system == "Sys.\n\n"


def test_jinja_file_and_chat_without_template(tiny_tokenizer, tmp_path):
    source = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    path = tmp_path / "t.jinja"
    path.write_text(source)
    assert trained_chat_template(str(path), tiny_tokenizer) == source
    assert trained_chat_template("chat", tiny_tokenizer) == tiny_tokenizer.chat_template
    bare = _with_template(tiny_tokenizer, "")
    bare.chat_template = None
    assert trained_chat_template("chat", bare) is None
