"""Running suites: weights/threshold/repeat math, the cache, regressions, graders, the CLI and its reports."""

from __future__ import annotations

import json
import re

import pytest

from tunelab.evaluate.cache import EvalCache
from tunelab.evaluate.grading import Graders
from tunelab.evaluate.runner import GenerationSettings, run_suite
from tunelab.evaluate.suite import parse_suite


class Scripted:
    """A model whose answer is a function of (last user message, seed): known answers for the scoring math."""

    tokenizer = model = None

    def __init__(self, name: str, answer):
        self.name, self.key, self.answer = name, f"scripted:{name}", answer
        self.calls: list[list[str]] = []

    def generate(self, conversations, params, *, seeds=None):
        seeds = seeds if seeds is not None else [None] * len(conversations)
        self.calls.append([c[-1]["content"] for c in conversations])
        return [self.answer(c[-1]["content"], s) for c, s in zip(conversations, seeds, strict=True)]

    def close(self):
        pass


@pytest.fixture()
def cache(tmp_path):
    c = EvalCache(tmp_path / "cache.sqlite")
    yield c
    c.close()


def test_weighted_threshold_math(cache):
    suite = parse_suite("""
cases:
  - id: two-thirds
    prompt: q
    assert: [{type: contains, value: "yes", weight: 2}, {type: contains, value: "no", weight: 1}]
    threshold: 0.6
  - id: two-thirds-strict
    prompt: q
    assert: [{type: contains, value: "yes", weight: 2}, {type: contains, value: "no", weight: 1}]
    threshold: 0.7
    weight: 3
""")
    run = run_suite(suite, [Scripted("m", lambda p, s: "yes")], cache=cache, log=lambda m: None)
    first, strict = run.models[0].cases
    assert first.samples[0].score == pytest.approx(2 / 3) and strict.samples[0].score == pytest.approx(2 / 3)
    assert first.passed and not strict.passed  # 0.667 >= 0.6, < 0.7
    assert run.models[0].pass_rate() == pytest.approx(1 / (1 + 3))  # case weights 1 (pass) and 3 (fail)


def test_repeat_needs_the_minimum_pass_rate(cache):
    suite = parse_suite("""
cases:
  - {id: lenient, prompt: a, assert: [{type: equals, value: ok}], repeat: 3, min_pass_rate: 0.6}
  - {id: strict, prompt: b, assert: [{type: equals, value: ok}], repeat: 3, min_pass_rate: 0.7}
""")
    model = Scripted("m", lambda p, seed: "ok" if seed % 3 != 2 else "bad")  # samples k=0,1 pass, k=2 fails
    run = run_suite(suite, [model], GenerationSettings(seed=0), cache=cache, log=lambda m: None)
    lenient, strict = run.models[0].cases
    assert [s.passed for s in lenient.samples] == [True, True, False]
    assert lenient.pass_rate == pytest.approx(2 / 3) and lenient.passed and not strict.passed
    assert sorted(model.calls[0]) == ["a", "a", "a", "b", "b", "b"]  # 6 samples in one batched call
    run5 = run_suite(suite, [model], GenerationSettings(seed=0, repeat=5), cache=cache, log=lambda m: None)
    assert [s.passed for s in run5.models[0].cases[0].samples] == [True, True, False, True, True]  # --repeat 5
    assert run5.models[0].generated == 4  # samples 3 and 4 of each case are new; 0-2 came from the cache


def test_regressions_list_cases_that_pass_first_and_fail_later(cache):
    suite = parse_suite("""
cases:
  - {id: kept, prompt: a, tags: [x], assert: [{type: icontains, value: fine}]}
  - {id: broken, prompt: b, tags: [x, y], assert: [{type: icontains, value: fine}]}
  - {id: fixed, prompt: c, assert: [{type: icontains, value: fine}]}
""")
    base = Scripted("base", lambda p, s: "FINE" if p in "ab" else "nope")
    tuned = Scripted("tuned", lambda p, s: "fine" if p in "ac" else "nope")
    run = run_suite(suite, [base, tuned], cache=cache, log=lambda m: None)
    regressions = run.regressions()
    assert [(r.case_id, r.baseline, r.model) for r in regressions] == [("broken", "base", "tuned")]
    assert regressions[0].reasons == ["icontains: missing 'fine'"]
    assert run.models[0].pass_rate("y") == 1.0 and run.models[1].pass_rate("y") == 0.0
    assert run.models[1].pass_rate("(untagged)") == 1.0 and run.models[0].pass_rate() == pytest.approx(2 / 3)


def test_judge_grades_are_batched_cached_and_unparseable_reported(cache):
    suite = parse_suite("""
cases:
  - {id: a, prompt: "be polite", assert: [{type: judge, value: "is polite", threshold: 8}]}
  - {id: b, prompt: "be rude", assert: [{type: judge, value: "is polite", model: other}]}
""")
    judge = Scripted("judge", lambda p, s: "Score: 9" if "Please" in p else "no idea")
    other = Scripted("other", lambda p, s: "6/10")
    graders = Graders(cache, default_judge="j", judges={"j": judge, "other": other})
    model = Scripted("m", lambda p, s: "Please, thank you." if "polite" in p else "Go away.")
    run = run_suite(suite, [model], cache=cache, graders=graders, log=lambda m: None)
    a, b = run.models[0].cases
    assert a.passed and a.samples[0].assertions[0].score == 9
    assert not b.passed and b.samples[0].assertions[0].reason == "judge score 6 < 7"
    assert "Rubric: is polite" in judge.calls[0][0] and "Please, thank you." in judge.calls[0][0]
    judge.answer = lambda p, s: "unclear"
    run2 = run_suite(
        suite, [Scripted("m2", lambda p, s: "Please do.")], cache=cache, graders=graders, log=lambda m: None
    )
    assert run2.models[0].unparseable == 1 and not run2.models[0].cases[0].passed
    calls = len(judge.calls)
    run_suite(suite, [model], cache=cache, graders=graders, log=lambda m: None)
    assert len(judge.calls) == calls  # every grade came from the cache


def test_missing_judge_model_is_a_clear_error(cache):
    from tunelab.errors import ConfigError

    suite = parse_suite("cases:\n  - {prompt: a, assert: [{type: judge, value: polite}]}\n")
    with pytest.raises(ConfigError, match="--judge MODEL"):
        run_suite(suite, [Scripted("m", lambda p, s: "x")], cache=cache, log=lambda m: None)


def test_cache_hits_generate_nothing_and_changes_regenerate_only_themselves(tiny_path, cache):
    from tunelab.evaluate.models import open_model

    text = """
cases:
  - {id: a, prompt: "hello there", assert: [{type: max_length, value: 10000}]}
  - {id: b, prompt: "how are you", assert: [{type: max_length, value: 10000}]}
  - {id: c, prompt: "tell me a story", assert: [{type: max_length, value: 10000}]}
"""
    settings = GenerationSettings(max_new_tokens=6)
    first = open_model("tiny", batch_size=2)
    run1 = run_suite(parse_suite(text), [first], settings, cache=cache, log=lambda m: None)
    assert first.generate_calls == 2 and run1.models[0].generated == 3  # 3 prompts in batches of 2
    again = open_model("tiny", batch_size=2)
    run2 = run_suite(parse_suite(text), [again], settings, cache=cache, log=lambda m: None)
    assert again.generate_calls == 0 and again._engine is None  # nothing generated, the model never loaded
    assert run2.models[0].cached == 3
    assert [c.samples[0].answer for c in run2.models[0].cases] == [c.samples[0].answer for c in run1.models[0].cases]
    edited = open_model("tiny", batch_size=2)
    run3 = run_suite(
        parse_suite(text.replace("how are you", "how old are you")), [edited], settings, cache=cache, log=lambda m: None
    )
    assert run3.models[0].generated == 1 and edited.generate_calls == 1  # only the edited case
    longer = open_model("tiny", batch_size=4)
    run_suite(parse_suite(text), [longer], GenerationSettings(max_new_tokens=7), cache=cache, log=lambda m: None)
    assert longer.generate_calls == 1  # other generation settings: every answer again, one batch


def test_batched_answers_equal_one_by_one(tiny_path):
    from tunelab.evaluate.models import open_model
    from tunelab.infer.types import SamplingParams

    convs = [[{"role": "user", "content": "hi " * n}] for n in (1, 5, 2, 9)]
    params = SamplingParams(max_new_tokens=6)
    batched = open_model("tiny", batch_size=4).generate(convs, params)
    single = open_model("tiny", batch_size=1)
    assert batched == [single.generate([c], params)[0] for c in convs]
    sampled = SamplingParams(max_new_tokens=6, temperature=1.0)
    seeds = [5, 6, 7, 8]
    together = single.generate(convs, sampled, seeds=seeds)
    apart = [single.generate([c], sampled, seeds=[s])[0] for c, s in zip(convs, seeds, strict=True)]
    assert together == apart  # a sample depends on its seed, not on its batch


def test_model_keys_follow_the_weights(tmp_path, tiny_path):
    import shutil

    from tunelab.evaluate.models import open_model

    folder = tmp_path / "copy"
    shutil.copytree(tiny_path, folder)
    key = open_model(str(folder)).key
    assert open_model(str(folder)).key == key  # stable
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"")  # rewritten: new mtime
    import os

    os.utime(weights, ns=(1, 1))
    assert open_model(str(folder)).key != key
    assert open_model("tiny").name == "tiny" and open_model(str(folder)).name == "copy"


SUITE = """
name: gate
cases:
  - {id: short, prompt: "hello", tags: [easy], assert: [{type: max_length, value: 10000}]}
  - {id: impossible, prompt: "hi", tags: [hard], assert: [{type: equals, value: "a precise sentence"}]}
"""


@pytest.fixture()
def cli_cache(tmp_path, monkeypatch):
    path = tmp_path / "cli-cache.sqlite"
    monkeypatch.setattr("tunelab.evaluate.cache.default_cache_path", lambda: path)
    return path


def test_cli_gate_tables_and_reports(tmp_path, tiny_path, cli_cache, capsys):
    from tunelab.cli.main import main

    suite = tmp_path / "gate.yaml"
    suite.write_text(SUITE)
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    args = ["eval", "suite", str(suite), "--model", "tiny", "--max-new-tokens", "4"]
    assert main([*args, "--min-pass", "0.6", "--json", str(out_json), "--html", str(out_html)]) == 1  # 50% < 60%
    out = capsys.readouterr().out
    assert re.search(r"^all\s+1/2 50\.0%$", out, re.M) and re.search(r"^hard\s+0/2|^hard\s+0/1 0\.0%$", out, re.M)
    assert "impossible: equals: expected 'a precise sentence'" in out and "FAIL: below --min-pass 0.6" in out
    assert main([*args, "--min-pass", "0.5"]) == 0  # 50% >= 50%, from the cache
    data = json.loads(out_json.read_text())
    assert data["models"][0]["pass_rate"] == 0.5 and data["models"][0]["by_tag"] == {"easy": 1.0, "hard": 0.0}
    assert data["models"][0]["results"][1]["samples"][0]["assertions"][0]["passed"] is False
    page = out_html.read_text()
    assert "<svg" in page and "impossible" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)  # no external assets
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_cli_bad_suite_exits_2_before_loading(tmp_path, cli_cache, capsys):
    from tunelab.cli.main import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("cases:\n  - {prompt: x, assert: [{type: regex, value: '('}]}\n")
    assert main(["eval", "suite", str(bad), "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert f"{bad} line 2 case 0" in err and "not a valid regular expression" in err


def test_reward_at_least_scores_with_the_reward_run(tmp_path, tiny_path, cache):
    from tests.align.conftest import CHOSEN, REJECTED, preference_rows, tiny_config, write_jsonl
    from tunelab.methods.reward import RewardScorer
    from tunelab.train.loop import train

    data = (write_jsonl(tmp_path / "t.jsonl", preference_rows(16, 1)), None)
    run_dir = str(train(tiny_config(tmp_path, "reward", data, training={"max_steps": 2})).run_dir)
    good, bad = CHOSEN.format(a=7), REJECTED.format(a=7)
    prompt, other = (
        [{"role": "user", "content": "What is 3 plus 4?"}],
        [{"role": "user", "content": "What is 3 plus 4 "}],
    )
    expected = RewardScorer.load(run_dir).score([(prompt, good), (other, bad)])
    assert expected[0] != expected[1]
    middle = sum(expected) / 2
    suite = parse_suite(f"""
cases:
  - {{id: good, prompt: "What is 3 plus 4?", assert: [{{type: reward_at_least, value: {middle}, model: {run_dir}}}]}}
  - {{id: bad, prompt: "What is 3 plus 4 ", assert: [{{type: reward_at_least, value: {middle}, model: {run_dir}}}]}}
""")
    model = Scripted("m", lambda p, s: good if p.endswith("?") else bad)
    graders = Graders(cache)
    run = run_suite(suite, [model], cache=cache, graders=graders, log=lambda m: None)
    first, second = run.models[0].cases
    higher_is_good = expected[0] > expected[1]
    assert (first.passed, second.passed) == (higher_is_good, not higher_is_good)
    assert first.samples[0].assertions[0].score == pytest.approx(expected[0], abs=1e-5)
    assert second.samples[0].assertions[0].score == pytest.approx(expected[1], abs=1e-5)
    graded = graders.graded
    run_suite(suite, [model], cache=cache, graders=graders, log=lambda m: None)
    assert graders.graded == graded == 2  # the re-run's rewards came from the cache


def test_cli_judge_model_is_opened_like_any_model(tmp_path, tiny_path, cli_cache, capsys):
    from tunelab.cli.main import main

    suite = tmp_path / "judged.yaml"
    suite.write_text("cases:\n  - {id: polite, prompt: hi, assert: [{type: judge, value: is polite}]}\n")
    assert main(["eval", "suite", str(suite), "--model", "tiny", "--judge", "tiny", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    # tiny's judge reply holds no 1-10 score: reported, counted as a failure, never as a low score
    assert "judge replies without a score (counted as failures): tiny: 1" in out
    assert "polite: judge: judge reply unparseable" in out


def test_url_model_answers_like_the_local_engine_and_caches_by_url(tiny_path, cache):
    from tunelab.errors import ServeError
    from tunelab.evaluate.models import open_model
    from tunelab.infer import SamplingParams, load_engine
    from tunelab.serve import ServerSettings, ServerThread, create_app

    suite = parse_suite("""
cases:
  - {id: a, prompt: "hello there", assert: [{type: max_length, value: 10000}]}
  - {id: b, prompt: "what is two and two", system: be brief, assert: [{type: max_length, value: 10000}]}
""")
    settings = GenerationSettings(max_new_tokens=5)
    local = run_suite(suite, [open_model("tiny")], settings, cache=cache, log=lambda m: None)
    with ServerThread(create_app(load_engine("tiny", device="cpu"), ServerSettings(api_key="k1"))) as srv:
        remote = open_model(srv.url + "/v1", batch_size=2, api_key="k1")
        assert remote.name == "tiny" and remote.key == f"url:{srv.url}#tiny" and remote.tokenizer is None
        pinned = open_model(f"{srv.url}/v1#tiny", api_key="k1")
        assert pinned.key == remote.key
        run = run_suite(suite, [remote], settings, cache=cache, log=lambda m: None)
    # greedy over HTTP = greedy in-process: the same answers (a different cache key, so really generated)
    assert run.models[0].generated == 2
    assert [c.samples[0].answer for c in run.models[0].cases] == [c.samples[0].answer for c in local.models[0].cases]
    with pytest.raises(ServeError, match="fix: start the server"):
        open_model("http://127.0.0.1:9/v1#x").generate([[{"role": "user", "content": "hi"}]], SamplingParams())
