"""Label masks: exactly the assistant answers + their end-of-turn token are trained, per template."""

from __future__ import annotations

import pytest

from tests.data.conftest import trained_text
from tunelab.data import Example, render_prompt, render_segments, tokenize_example
from tunelab.errors import DataError

TWO_TURNS = [
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Six, of course."},
]
EOS = "<|im_end|>"


def _example(messages, extra_input=None) -> Example:
    return Example([dict(m) for m in messages], None, "mem", 1, extra_input)


def _check_labels(tok, tokenized):
    """Labels are the input ids where trained and -100 elsewhere; the first token is never trained."""
    assert len(tokenized.labels) == len(tokenized.input_ids)
    assert tokenized.labels[0] == -100
    for t, lab in zip(tokenized.input_ids, tokenized.labels, strict=True):
        assert lab in (-100, t)


def test_chat_template_trains_every_answer_with_its_terminator(tiny_tokenizer):
    tok = tiny_tokenizer
    out = tokenize_example(_example(TWO_TURNS), tok, "chat")
    _check_labels(tok, out)
    assert trained_text(tok, out.input_ids, out.labels) == f"Four.{EOS}Six, of course.{EOS}"
    # the token sequence is the one the model is served with (the tokenizer's own template)
    assert tok.decode(out.input_ids) == tok.apply_chat_template(TWO_TURNS, tokenize=False)
    # the newline after each <|im_end|> belongs to the prompt
    segments = render_segments(_example(TWO_TURNS), tok, "chat")
    assert [s.text for s in segments if s.trained] == [f"Four.{EOS}", f"Six, of course.{EOS}"]
    assert segments[-1].text == "\n" and not segments[-1].trained


def test_chat_eos_token_is_trained_as_a_token(tiny_tokenizer):
    out = tokenize_example(_example(TWO_TURNS), tiny_tokenizer, "chat")
    trained_ids = [lab for lab in out.labels if lab != -100]
    assert trained_ids.count(tiny_tokenizer.eos_token_id) == 2
    assert trained_ids[-1] == tiny_tokenizer.eos_token_id


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("alpaca", "### Instruction:\nWhat is two plus two?\n\n### Response:\nFour.{eos}\n\n"
                   "### Instruction:\nAnd three plus three?\n\n### Response:\nSix, of course.{eos}"),
        ("qa", "### Question:\nWhat is two plus two?\n\n### Answer:\nFour.{eos}\n\n"
               "### Question:\nAnd three plus three?\n\n### Answer:\nSix, of course.{eos}"),
    ],
)
def test_plain_templates_multi_turn(tiny_tokenizer, template, expected):
    out = tokenize_example(_example(TWO_TURNS), tiny_tokenizer, template)
    _check_labels(tiny_tokenizer, out)
    assert tiny_tokenizer.decode(out.input_ids) == expected.format(eos=EOS)
    assert trained_text(tiny_tokenizer, out.input_ids, out.labels) == f"Four.{EOS}Six, of course.{EOS}"


def test_alpaca_input_section_and_system(tiny_tokenizer):
    msgs = [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "Add"},
            {"role": "assistant", "content": "5"}]
    out = tokenize_example(_example(msgs, "2 and 3"), tiny_tokenizer, "alpaca")
    assert tiny_tokenizer.decode(out.input_ids) == (
        f"Be exact.\n\n### Instruction:\nAdd\n\n### Input:\n2 and 3\n\n### Response:\n5{EOS}")
    assert trained_text(tiny_tokenizer, out.input_ids, out.labels) == f"5{EOS}"
    qa = tokenize_example(_example(msgs, "2 and 3"), tiny_tokenizer, "qa")
    assert "### Question:\nAdd\n\n2 and 3\n\n### Answer:\n" in tiny_tokenizer.decode(qa.input_ids)


def test_system_prompt_only_where_missing(tiny_tokenizer):
    added = render_segments(_example(TWO_TURNS[:2]), tiny_tokenizer, "chat", system_prompt="You are terse.")
    assert added[0].text.startswith("<|im_start|>system\nYou are terse.<|im_end|>")
    own = [{"role": "system", "content": "Own."}, *TWO_TURNS[:2]]
    kept = render_segments(_example(own), tiny_tokenizer, "chat", system_prompt="You are terse.")
    assert "Own." in kept[0].text and "terse" not in "".join(s.text for s in kept)


def test_train_on_prompt_trains_all_but_the_first_token(tiny_tokenizer):
    out = tokenize_example(_example(TWO_TURNS), tiny_tokenizer, "chat", train_on_prompt=True)
    assert out.labels == [-100, *out.input_ids[1:]]


def test_text_examples_train_text_and_eos(tiny_tokenizer):
    out = tokenize_example(Example(None, "the cat sat", "mem", 1), tiny_tokenizer, "chat")
    assert tiny_tokenizer.decode(out.input_ids) == f"the cat sat{EOS}"
    assert out.labels[1:] == out.input_ids[1:] and out.labels[0] == -100


def test_prompt_rendering_for_preference_data(tiny_tokenizer):
    prompt = render_prompt(TWO_TURNS[:1], tiny_tokenizer)
    assert prompt == tiny_tokenizer.apply_chat_template(TWO_TURNS[:1], tokenize=False, add_generation_prompt=True)
    # prompt + completion: the last assistant turn is the only trained part
    segments = render_segments(_example(TWO_TURNS[:2]), tiny_tokenizer, "chat")
    assert "".join(s.text for s in segments if not s.trained).startswith(prompt)
    assert [s.text for s in segments if s.trained] == [f"Four.{EOS}"]
    assert render_prompt(TWO_TURNS[:1], tiny_tokenizer, "alpaca").endswith("### Response:\n")


JINJA_SPECIAL_END = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}"
)
JINJA_PLAIN = (
    "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)


def test_jinja_file_with_a_non_eos_terminator(tiny_tokenizer, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(JINJA_SPECIAL_END)
    out = tokenize_example(_example(TWO_TURNS), tiny_tokenizer, str(path))
    assert trained_text(tiny_tokenizer, out.input_ids, out.labels) == (
        "Four.<|endoftext|>Six, of course.<|endoftext|>")


def test_jinja_file_without_terminator_gets_eos(tiny_tokenizer, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(JINJA_PLAIN)
    out = tokenize_example(_example(TWO_TURNS), tiny_tokenizer, str(path))
    assert trained_text(tiny_tokenizer, out.input_ids, out.labels) == f"Four.{EOS}Six, of course.{EOS}"
    assert tiny_tokenizer.decode(out.input_ids).startswith("USER: What is two plus two?\n\nASSISTANT: Four.")


def test_non_prefix_stable_template_is_refused(tiny_tokenizer, tmp_path):
    path = tmp_path / "t.jinja"  # shows only the last turn's content: earlier turns change later
    path.write_text("{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}x{% endif %}{% endfor %}"
                    "{% if add_generation_prompt %}A:{% endif %}")
    with pytest.raises(DataError, match="prefix"):
        tokenize_example(_example(TWO_TURNS), tiny_tokenizer, str(path))


def test_unknown_template(tiny_tokenizer):
    with pytest.raises(DataError, match="chat, alpaca, qa"):
        tokenize_example(_example(TWO_TURNS), tiny_tokenizer, "vicuna")
