"""``tunelab draft`` on tiny: end to end through the CLI (prune → distill → measure), greedy outputs
identical with and without the draft, and the acceptance rate equal to an independent count."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.compress.draft import DraftOptions, measure_speed, prune_to, read_prompts, render, split_prompts
from tunelab.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def target(tiny_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_path, dtype="float32").eval(), AutoTokenizer.from_pretrained(
        tiny_path
    )


PROMPTS = ["Explain bees in two sentences.", "What is interesting about clocks?", "Describe tea to a child."]


def expected_acceptance(target, draft, prompt: list[int], max_new: int, k: int, eos: set[int]) -> tuple[int, int]:
    """(drafted, accepted) of greedy speculation, counted without the decode loop: walk the target's
    greedy output; at each step the draft proposes greedily (full recompute, no cache) and the
    longest prefix equal to the target's tokens is accepted, then one target token is added."""

    def greedy(model, ids: list[int], n: int) -> list[int]:
        out: list[int] = []
        with torch.no_grad():
            for _ in range(n):
                logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
                out.append(int(logits.argmax()))
                if out[-1] in eos:
                    break
        return out

    reference = greedy(target, prompt, max_new)
    drafted = accepted = pos = 0
    while pos < len(reference):
        n = min(k, max_new - pos - 1)
        if n <= 0:
            break
        proposal = greedy(draft, prompt + reference[:pos], n)
        proposal += [-1] * (n - len(proposal))  # the draft stopped at EOS: propose nothing further (never matches)
        match = next((i for i in range(n) if pos + i >= len(reference) or proposal[i] != reference[pos + i]), n)
        drafted, accepted = drafted + n, accepted + match
        if any(t in eos for t in reference[pos : pos + match + 1]):
            break
        pos += match + 1
    return drafted, accepted


def test_acceptance_rate_matches_an_independent_count_and_outputs_are_identical(target):
    from tunelab.infer.decode import eos_token_ids

    model, tokenizer = target
    rows = [render(tokenizer, p) for p in PROMPTS]
    draft, dropped, scores = prune_to(model, tokenizer, rows, 2)
    assert len(dropped) == 2 and len(scores) == 4 and draft.config.num_hidden_layers == 2
    assert model.config.num_hidden_layers == 4  # the target is untouched (the draft is a copy)
    options = DraftOptions(num_draft=3, eval_tokens=12)
    report = measure_speed(model, draft.eval(), tokenizer, PROMPTS, options)
    assert report.identical and report.new_tokens > 0
    eos = set(eos_token_ids(model, tokenizer))
    counts = [expected_acceptance(model, draft, ids, 12, 3, eos) for ids in rows]
    assert (report.drafted, report.accepted) == (sum(c[0] for c in counts), sum(c[1] for c in counts))
    assert 0.0 <= report.acceptance_rate <= 1.0 and report.acceptance_rate == report.accepted / report.drafted
    # the target as its own draft: every drafted token is accepted
    assert measure_speed(model, model, tokenizer, PROMPTS[:1], options).acceptance_rate == 1.0


def test_draft_command_end_to_end(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from tunelab.cli.main import main
    from tunelab.infer.decode import eos_token_ids
    from tunelab.infer.drafting import DraftRuntime, load_draft
    from tunelab.models.load import load_tokenizer

    out = tmp_path / "draft"  # the bundled prompt set (tiny answers some of them with nothing but padding)
    argv = [
        "draft",
        "tiny",
        "--layers",
        "2",
        "--max-prompts",
        "24",
        "--gen-tokens",
        "16",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--eval-prompts",
        "2",
        "--eval-tokens",
        "8",
        "--min-confidence",
        "0",
        "--head-tokens",
        "100",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().err  # human output on stderr (stdout is for --json)
    report = json.loads((out / "draft.json").read_text())
    speed = report["speed"]
    assert speed["identical"] is True and 0.0 <= speed["acceptance_rate"] <= 1.0
    assert speed["accepted"] <= speed["drafted"] and speed["speedup"] > 0
    for line in ("acceptance rate", "speedup", "greedy identical  yes"):
        assert line in printed
    assert report["distill"]["steps"] == 3 and report["draft_layers"] == 2 and report["target_layers"] == 4
    runtime = DraftRuntime.read(out)  # how tunelab runs it: the 100 most frequent answer tokens + EOS, int8
    eos = eos_token_ids(AutoModelForCausalLM.from_pretrained(out), load_tokenizer(out))
    assert runtime.quantize == "int8" and runtime.min_confidence == 0.0 and runtime.vocab == sorted(runtime.vocab)
    assert set(eos) <= set(runtime.vocab) and len(runtime.vocab) <= 100 + len(eos)
    assert report["runtime"]["head_tokens"] == len(runtime.vocab) and speed["drafted"] > 0
    assert 0.0 < speed["coverage"] <= 1.0
    served = load_draft(out)  # what tunelab serve --draft loads: the restricted int8 head
    assert served.lm_head.out_features == len(runtime.vocab) and served.draft_vocab.tolist() == runtime.vocab
    draft = AutoModelForCausalLM.from_pretrained(out)  # a plain transformers folder
    assert draft.config.num_hidden_layers == 2 and draft.config.use_cache
    assert (out / "generations.jsonl").read_text().count("\n") >= 2
    assert main(argv) == 2  # the folder now holds a draft: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_options_and_prompt_files_are_checked(tmp_path):
    assert DraftOptions(keep=0.25).kept_layers(30) == 8 and DraftOptions(layers=6).kept_layers(30) == 6
    with pytest.raises(ConfigError, match="--layers and --keep"):
        DraftOptions(layers=2, keep=0.5).kept_layers(30)
    with pytest.raises(ConfigError, match="keep between 1 and 29"):
        DraftOptions(layers=30).kept_layers(30)
    with pytest.raises(ConfigError, match=r"--gen-batch 0: must be at least 1; --minutes -1: must be more than 0"):
        DraftOptions(gen_batch=0, minutes=-1)  # the Python API is checked as the CLI is
    with pytest.raises(ConfigError, match=r"--head-tokens -5"):
        DraftOptions(head_tokens=-5)
    with pytest.raises(ConfigError, match="quantize 'int4'"):  # the run-time recipe's checks, at construction
        DraftOptions(quantize="int4")
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "a"}\n{"text": "no prompt"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: no prompt"):
        read_prompts(bad)
    good = tmp_path / "q.jsonl"
    good.write_text('{"instruction": "add", "input": "2 3"}\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert read_prompts(good) == ["add\n\n2 3", "hi"]
    train, held = split_prompts([f"p{i}" for i in range(20)] + ["p0"], DraftOptions(held_out=0.1, eval_prompts=1))
    assert len(held) == 1 and len(train) == 18 and not set(held) & set(train)
