"""Perplexity: token-weighted mean NLL checked against a direct computation from the logits of tiny."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tunelab.data.types import IGNORE_INDEX
from tunelab.errors import ConfigError
from tunelab.evaluate.perplexity import perplexity, read_rows, windows
from tunelab.evaluate.scoring import ScoreRow, ScoringModel, score_rows

TEXTS = ["The cat sat on the mat and looked at the door.", "A model learns to predict the next token.", "Short one."]
CHAT = [
    {"messages": [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four."}]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue, like the sky."},
        ]
    },
]


@pytest.fixture()
def scorer(tiny_model, tiny_tokenizer):
    return ScoringModel(tiny_model.eval(), tiny_tokenizer, "tiny", "fp32")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def direct_logprobs(model, ids):
    """log p(ids[t] | ids[:t]) for t >= 1, one forward over the whole sequence (no batching, no windows)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return logp.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def test_text_rows_equal_the_direct_mean_nll(scorer, tiny_tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in TEXTS])
    result = perplexity(scorer, data, batch_size=2)
    total, count = 0.0, 0
    for text in TEXTS:  # a text row is rendered as text + EOS (tiny adds no BOS), every token but the first scored
        ids = tiny_tokenizer(text + tiny_tokenizer.eos_token, add_special_tokens=False).input_ids
        lp = direct_logprobs(scorer.model, ids)
        total, count = total - sum(lp), count + len(lp)
    assert result.tokens == count
    assert result.examples == 3 and result.windows == 3
    assert result.nll == pytest.approx(total / count, abs=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


def test_chat_rows_score_only_the_answers_through_the_chat_template(scorer, tiny_tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "c.jsonl", CHAT)
    rows = read_rows(data, tiny_tokenizer, "trained")
    total, count = 0.0, 0
    for row, example in zip(rows, CHAT, strict=True):
        full = tiny_tokenizer.apply_chat_template(example["messages"], tokenize=False)
        assert tiny_tokenizer.decode(row.input_ids) == full  # the model's own template
        trained = [t for t, label in zip(row.input_ids, row.labels, strict=True) if label != IGNORE_INDEX]
        assert tiny_tokenizer.decode(trained) == example["messages"][-1]["content"] + "<|im_end|>"
        lp = direct_logprobs(scorer.model, row.input_ids)
        picked = [lp[t - 1] for t in range(1, len(row.labels)) if row.labels[t] != IGNORE_INDEX]
        total, count = total - sum(picked), count + len(picked)
    result = perplexity(scorer, data)
    assert result.tokens == count
    assert result.nll == pytest.approx(total / count, abs=1e-5)
    everything = perplexity(scorer, data, scope="all")
    assert everything.tokens == sum(len(r.input_ids) - 1 for r in rows)


def test_sliding_windows_score_each_token_once_with_the_right_context(scorer, tiny_tokenizer, tmp_path):
    text = " ".join(TEXTS * 3)
    path = tmp_path / "long.txt"
    path.write_text(text)
    ids = tiny_tokenizer(text + tiny_tokenizer.eos_token, add_special_tokens=False).input_ids
    max_length, stride = 16, 6
    result = perplexity(scorer, path, max_length=max_length, stride=stride, batch_size=3)
    # by hand: windows start every 6 tokens; each scores the tokens the previous one did not
    total, scored, prev_end, begin = 0.0, [], 0, 0
    while True:
        end = min(begin + max_length, len(ids))
        lp = direct_logprobs(scorer.model, ids[begin:end])  # lp[k] scores ids[begin + k + 1]
        for t in range(max(prev_end, begin + 1), end):
            total -= lp[t - begin - 1]
            scored.append(t)
        if end == len(ids):
            break
        prev_end, begin = end, begin + stride
    assert scored == list(range(1, len(ids)))
    assert result.tokens == len(ids) - 1 and result.windows > 1
    assert result.nll == pytest.approx(total / len(scored), abs=1e-5)
    # one window covering everything is the full-context computation
    whole = perplexity(scorer, path, max_length=len(ids) + 1, stride=1)
    assert whole.windows == 1
    assert whole.nll == pytest.approx(-sum(direct_logprobs(scorer.model, ids)) / (len(ids) - 1), abs=1e-5)


def test_windows_of_a_row_cover_every_labelled_position_once():
    from tunelab.data.types import TokenizedExample

    ids = list(range(40))
    labels = [IGNORE_INDEX] * 5 + ids[5:]
    rows = windows(TokenizedExample(ids, labels, 40), max_length=10, stride=4)
    covered = [row.ids[k] for row in rows for k in row.scored]
    assert covered == ids[5:]
    assert all(len(r.ids) <= 10 and 0 not in r.scored for r in rows)


def test_batched_scores_equal_one_row_at_a_time(scorer):
    rows = [ScoreRow(tuple(range(5, 5 + n)), tuple(range(1, n))) for n in (3, 9, 6, 12)]
    alone = [score_rows(scorer.model, [r], batch_size=1)[0] for r in rows]
    together = score_rows(scorer.model, rows, batch_size=4, pad_id=3)
    for a, b in zip(alone, together, strict=True):
        assert a.tokens == b.tokens and a.greedy == b.greedy
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_bad_window_settings_are_config_errors(scorer, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": TEXTS[0]}])
    with pytest.raises(ConfigError, match="stride"):
        perplexity(scorer, data, max_length=8, stride=8)


def test_a_file_may_mix_text_and_chat_rows(scorer, tmp_path):
    text_only = perplexity(scorer, write_jsonl(tmp_path / "t.jsonl", [{"text": TEXTS[0]}]))
    chat_only = perplexity(scorer, write_jsonl(tmp_path / "c.jsonl", CHAT[:1]))
    mixed = perplexity(scorer, write_jsonl(tmp_path / "m.jsonl", [{"text": TEXTS[0]}, CHAT[0]]))
    assert mixed.tokens == text_only.tokens + chat_only.tokens
    expected = (text_only.nll * text_only.tokens + chat_only.nll * chat_only.tokens) / mixed.tokens  # token-weighted
    assert mixed.nll == pytest.approx(expected, abs=1e-6)


def test_cli_prints_the_same_result_as_json(scorer, tmp_path, capsys):
    from tunelab.cli.main import main

    data = write_jsonl(tmp_path / "m.jsonl", [{"text": TEXTS[0]}, CHAT[0]])
    assert main(["eval", "perplexity", str(data), "--model", "tiny", "--dtype", "fp32", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tokens"] == perplexity(scorer, data).tokens
    assert printed["perplexity"] == pytest.approx(perplexity(scorer, data).perplexity, rel=1e-6)
    assert main(["eval", "perplexity", str(data), "--model", "tiny", "--scope", "some"]) == 2
