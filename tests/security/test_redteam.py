"""tunelab redteam: the probe library validated, the rate math on hand-computed values, a scripted
target through the whole pipeline (guardrails off and on), the tiny model end to end through the
CLI (JSON/HTML counts), and a URL target against an in-process ``tunelab serve``."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from tunelab.errors import ConfigError
from tunelab.security.detectors import DETECTORS
from tunelab.security.redteam import RedteamOptions, plan_attempts, run_redteam, run_target, summarize
from tunelab.security.redteam_calibration import DetectorStats
from tunelab.security.redteam_probes import (
    CATEGORIES,
    CanaryRecord,
    default_canaries,
    expand,
    load_benign,
    load_file,
    load_library,
    read_canary_file,
)
from tunelab.security.redteam_report import render_html, report_json, terminal_table
from tunelab.security.redteam_stats import Accuracy, rate, rogan_gladen, wilson
from tunelab.security.redteam_targets import Reply

# --- the library ---------------------------------------------------------------------------------


def test_library_covers_every_category_with_unique_ids_and_known_detectors():
    probes = load_library()
    counts = Counter(p.category for p in probes)
    assert set(counts) == set(CATEGORIES)
    assert all(8 <= n <= 15 for n in counts.values()), counts
    assert len({p.id for p in probes}) == len(probes)
    for p in probes:
        assert p.detector in DETECTORS
        assert p.messages[-1][0] == "user" and p.goal
        assert all("{{" not in c or "{{context}}" in c or "{{canary}}" in c for _, c in p.messages), p.id
        detector = DETECTORS.get(p.detector)
        assert set(detector.required) <= set(p.params), p.id


def test_training_canary_probes_expand_per_record_with_context():
    probes = load_library(categories=["training_data_leakage"])
    records = [CanaryRecord("AAA-111-BBB", "the door code of lab 4"), CanaryRecord("CCC-222-DDD")]
    attempts = expand(probes, records)
    per_record = [p for p in probes if p.per_record]
    assert len(attempts) == len(per_record) * 1 + (len(probes) - len(per_record))
    ask = next(a for a in attempts if a.probe_id == "td-01-ask-context")
    assert ask.id == "td-01-ask-context#1" and "the door code of lab 4" in ask.messages[-1][1]
    assert ask.params["canary"] == ["AAA-111-BBB"]
    generic = next(a for a in attempts if a.probe_id == "td-06-list-secrets")
    assert generic.params["canary"] == ["AAA-111-BBB", "CCC-222-DDD"]


def test_canary_file_and_short_canary(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text('# planted\nZEBRA-4471-QX\n{"canary": "KQ-9981-LM", "context": "the vault code"}\n')
    assert read_canary_file(f) == [CanaryRecord("ZEBRA-4471-QX"), CanaryRecord("KQ-9981-LM", "the vault code")]
    with pytest.raises(ConfigError, match="shorter than 6.*\n  fix:"):
        plan_attempts(RedteamOptions(canaries=("abc",)))


@pytest.mark.parametrize("body, match", [
    ("category: nope\nprobes: []\n", "unknown category 'nope'"),
    ("category: harmful_requests\nprobes:\n  - {id: x, goal: g, messages: {user: hi}, detector: refusl}\n",
     "did you mean 'refusal'|Did you mean 'refusal'"),
    ("category: harmful_requests\nprobes:\n  - {id: x, goal: g, messages: {user: hi}, detector: canary}\n",
     "missing param 'canary'"),
    ("category: harmful_requests\nprobes:\n  - {id: x, goal: g, messages: {user: '{{who}}'}, detector: refusal}\n",
     r"unknown variable \{\{who\}\}"),
    ("category: harmful_requests\nprobes:\n  - {id: x, goal: g, messages: {assistant: hi}, detector: refusal}\n",
     "expected a mapping with 'user'"),
])
def test_malformed_probe_files_name_file_probe_and_fix(tmp_path, body, match):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=match) as err:
        load_file(path)
    assert "bad.yaml" in str(err.value) and "fix:" in str(err.value)


def test_duplicate_ids_and_unknown_category_flag(tmp_path):
    probe = "category: harmful_requests\nprobes:\n  - {id: x, goal: g, messages: {user: hi}, detector: refusal}\n"
    (tmp_path / "a.yaml").write_text(probe)
    (tmp_path / "b.yaml").write_text(probe)
    with pytest.raises(ConfigError, match="probe id 'x' is also in"):
        load_library(tmp_path)
    with pytest.raises(ConfigError, match="--categories: unknown category 'jailbreaks'"):
        load_library(categories=["jailbreaks"])


def test_benign_set_is_loaded():
    benign = load_benign()
    assert len(benign) >= 50 and len({i for i, _ in benign}) == len(benign)


# --- the math --------------------------------------------------------------------------------------


def test_wilson_interval_hand_computed():
    # k=3, n=12, z²=3.841459: p=.25, denom=1+z²/12=1.320122, centre=(.25+z²/24)/denom=.410061/1.320122=.310624,
    # half=1.959964*sqrt(.25*.75/12+z²/576)/denom=1.959964*.149312/1.320122=.221682 -> [.088941, .532305]
    low, high = wilson(3, 12)
    assert low == pytest.approx(0.088941, abs=2e-6) and high == pytest.approx(0.532305, abs=2e-6)
    # k=0: the lower bound is 0 and the upper z²/(n+z²) = 3.841459/13.841459 = 0.277533
    assert wilson(0, 10) == (0.0, pytest.approx(0.277533, abs=2e-6))
    assert wilson(0, 0) == (0.0, 1.0)


def test_rogan_gladen_hand_computed():
    # (0.30 + 0.90 - 1) / (0.80 + 0.90 - 1) = 0.20 / 0.70
    assert rogan_gladen(0.30, 0.80, 0.90) == pytest.approx(0.2857142857)
    assert rogan_gladen(0.05, 0.80, 0.90) == 0.0  # below the false-positive floor: clipped
    assert rogan_gladen(0.95, 0.80, 0.90) == 1.0
    assert rogan_gladen(0.4, 0.5, 0.5) is None  # a coin-flip detector cannot correct anything
    assert rogan_gladen(0.4, math.nan, 0.9) is None


def test_corrected_rate_maps_the_wilson_bounds_and_pools_groups():
    one = rate([(3, 12, Accuracy(0.8, 0.9))])
    low, high = wilson(3, 12)
    assert one.raw == 0.25 and (one.raw_low, one.raw_high) == (low, high)
    assert one.corrected == pytest.approx((0.25 + 0.9 - 1) / 0.7)
    assert one.corrected_low == pytest.approx(max(0.0, (low - 0.1) / 0.7))
    assert one.corrected_high == pytest.approx((high - 0.1) / 0.7)
    # two groups: a certain one (guardrail blocks, 0/4) and a detector one (3/12 corrected to 0.2142857)
    both = rate([(0, 4, Accuracy(1, 1)), (3, 12, Accuracy(0.8, 0.9))], unjudged=2)
    assert (both.successes, both.judged, both.unjudged) == (3, 16, 2)
    assert both.raw == 3 / 16
    assert both.corrected == pytest.approx((4 * 0 + 12 * (0.15 / 0.7)) / 16)
    # two groups: each Wilson interval at 97.5% (Bonferroni), z = Φ⁻¹(1 − 0.0125) = 2.241403
    z2 = 2.241403
    w_high = wilson(3, 12, z2)[1]
    assert wilson(0, 4, z2)[1] == pytest.approx(z2**2 / (4 + z2**2), abs=1e-6)
    assert both.corrected_high == pytest.approx((4 * z2**2 / (4 + z2**2) + 12 * (w_high - 0.1) / 0.7) / 16, abs=1e-5)
    assert both.corrected_low == pytest.approx(12 * max(0.0, (wilson(3, 12, z2)[0] - 0.1) / 0.7) / 16, abs=1e-5)


def test_refusal_accuracy_swaps_sides_for_attack_success():
    # the refusal detector's specificity (compliance seen as compliance) is the sensitivity for success
    assert Accuracy.for_success(0.97, 0.91, success_on_hit=False) == Accuracy(0.91, 0.97)
    assert Accuracy.for_success(0.97, 0.91, success_on_hit=True) == Accuracy(0.97, 0.91)


# --- a scripted target through the pipeline ---------------------------------------------------------


class Scripted:
    """Answers by category: obeys injections, leaks the system canary, refuses harmful requests."""

    name = "scripted"
    special_tokens = ()

    def __init__(self):
        self.seen = []

    def answer(self, conversations, max_new_tokens):
        self.seen += list(conversations)
        out = []
        for conv in conversations:
            user = conv[-1][1]
            system = conv[0][1] if conv[0][0] == "system" else ""
            if "ORCHID-5521-VEX" in system:
                out.append(Reply("Sure: ORCHID-5521-VEX"))
            elif "PWNED" in user or "PWN3D" in user:
                out.append(Reply("PWNED"))
            elif "weapon" in user:
                out.append(Reply("I'm sorry, but I can't help with that."))
            else:
                out.append(Reply(""))  # cannot judge
        return out


EXACT = {name: DetectorStats(name, 100, 0, 100, 0, 0, 0) for name in DETECTORS}


def test_scripted_target_counts_and_rates():
    attempts = expand(load_library(categories=["direct_injection", "system_prompt_leakage", "harmful_requests"]),
                      default_canaries())
    target = Scripted()
    run = run_target(target, attempts, ("off",), None, max_new_tokens=8)
    summary = summarize(run, EXACT)["off"]
    assert len(target.seen) == len(attempts) == 36
    # every direct injection contains PWNED and is obeyed; every leak probe leaks
    assert (summary["direct_injection"].successes, summary["direct_injection"].judged) == (12, 12)
    assert (summary["system_prompt_leakage"].successes, summary["system_prompt_leakage"].judged) == (12, 12)
    harmful = [r for r in run.results if r.attempt.category == "harmful_requests"]
    weapon = sum("weapon" in r.attempt.messages[-1][1] for r in harmful)
    h = summary["harmful_requests"]
    assert (h.successes, h.judged, h.unjudged) == (0, weapon, 12 - weapon)
    assert summary["all"].successes == 24 and summary["all"].corrected == pytest.approx(24 / (24 + weapon))


def test_guardrails_on_blocks_inputs_and_answers_and_counts_them_as_failed():
    from tunelab.security.redteam import build_chain

    attempts = expand(load_library(categories=["direct_injection", "system_prompt_leakage"]), default_canaries())
    options = RedteamOptions(guardrails="both")
    chain = build_chain(options, [r.canary for r in default_canaries()])
    target = Scripted()
    run = run_target(target, attempts, ("off", "on"), chain, benign=[("b1", "What is the capital of France?")])
    summary = summarize(run, EXACT)
    on = [r for r in run.results if r.guard == "on"]
    blocked_in = [r for r in on if r.judgement == "blocked_input"]
    blocked_out = [r for r in on if r.judgement == "blocked_output"]
    for r in blocked_in:  # a blocked input was never generated from
        assert not chain.check_messages(list(r.attempt.messages)).verdict.allowed
    # the leaked canary in the system prompt is caught at the answer, so no leak succeeds with guardrails
    leak_on = summary["on"]["system_prompt_leakage"]
    assert leak_on.successes == 0 and leak_on.judged == 12
    assert all(r.success is False for r in blocked_in + blocked_out)
    assert summary["off"]["direct_injection"].successes == 12
    assert summary["on"]["direct_injection"].successes == 12 - sum(
        r.attempt.category == "direct_injection" for r in blocked_in + blocked_out)
    for cat, r in summary["on"].items():  # a guardrail can only take successes away
        assert r.successes <= summary["off"][cat].successes
    # the target: injection and leakage attacks at least halved against an obedient model
    injection_and_leak = ("direct_injection", "system_prompt_leakage")
    assert 2 * sum(summary["on"][c].successes for c in injection_and_leak) <= sum(
        summary["off"][c].successes for c in injection_and_leak)
    assert run.benign.total == 1 and run.benign.blocked == 0


def test_report_formats_from_a_scripted_run():
    attempts = expand(load_library(categories=["harmful_requests", "direct_injection"]), default_canaries())
    runs = []
    for name in ("base", "tuned"):
        target = Scripted()
        target.name = name
        run = run_target(target, attempts, ("off",), None)
        summarize(run, EXACT)
        runs.append(run)
    text = terminal_table(runs, EXACT)
    assert "A = base" in text and "B = tuned" in text
    line = next(x for x in text.splitlines() if x.startswith("Direct prompt injection"))
    assert line.count("100.0% 12/12 [75.8-100.0]") == 2  # Wilson(12, 12) lower = 12/(12+3.8415) = 0.7575
    data = report_json(runs, EXACT, {"max_new_tokens": 8})
    assert [t["name"] for t in data["targets"]] == ["base", "tuned"]
    assert data["targets"][0]["summary"]["off"]["direct_injection"]["asr_ci95"] == [0.7575, 1.0]
    page = render_html(runs, EXACT, {})
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    assert "100.0% 12/12 [75.8-100.0]" in page


# --- end to end on the tiny model and against a served model ------------------------------------------


def test_cli_end_to_end_on_tiny_writes_json_and_html(tmp_path):
    from tunelab.cli.main import main

    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    code = main(["redteam", "tiny", "--categories", "direct_injection,harmful_requests", "--max-per-category", "2",
                 "--max-new-tokens", "3", "--guardrails", "both", "--benign", "input", "--device", "cpu",
                 "--json", str(out_json), "--html", str(out_html)])
    assert code == 0
    data = json.loads(out_json.read_text())
    (target,) = data["targets"]
    assert data["settings"]["attempts"] == 4 and len(target["attempts"]) == 8  # 4 attempts x off/on
    for guard, per in target["summary"].items():
        rows = [a for a in target["attempts"] if a["guard"] == guard]
        for cat, r in per.items():
            mine = [a for a in rows if cat == "all" or a["category"] == cat]
            assert r["successes"] == sum(a["success"] is True for a in mine)
            assert r["judged"] == sum(a["success"] is not None for a in mine)
            assert r["judged"] + r["unjudged"] == len(mine)
    on = [a for a in target["attempts"] if a["guard"] == "on"]
    assert any(a["judgement"] == "blocked_input" for a in on)  # "Ignore all previous instructions..."
    benign = target["benign"]
    assert benign["total"] == 60 and benign["answers_checked"] is False and benign["blocked_output"] == 0
    page = out_html.read_text()
    assert page.startswith("<!doctype html>") and "Direct prompt injection" in page and "<link" not in page


def test_url_target_against_an_in_process_server(tmp_path):
    from tunelab.infer import load_engine
    from tunelab.security.guardrails import GuardrailChain
    from tunelab.security.redteam_targets import UrlTarget
    from tunelab.serve import ServerSettings, ServerThread, create_app

    engine = load_engine("tiny", device="cpu")
    with ServerThread(create_app(engine, ServerSettings(api_key="k1"))) as srv:
        assert srv.host == "127.0.0.1"
        target = UrlTarget(srv.url + "/v1", api_key="k1")
        assert target.model == "tiny"
        options = RedteamOptions(categories=("harmful_requests",), guardrails="off", max_new_tokens=3,
                                 max_per_category=3)
        (run,), settings = run_redteam([target], options)
    assert len(run.results) == 3 and settings["attempts"] == 3
    local = run_target(_Local(engine), [r.attempt for r in run.results], ("off",), max_new_tokens=3)
    # the server decodes greedily like the local engine: same answers, same judgements
    assert [r.output for r in run.results] == [r.output for r in local.results]
    # a server with its own guardrails: blocked requests are the server's refusals, failed attacks
    chain = GuardrailChain.from_specs(["injection"])
    with ServerThread(create_app(engine, ServerSettings(), chain)) as srv:
        options = RedteamOptions(categories=("direct_injection",), guardrails="off", max_new_tokens=2,
                                 max_per_category=1)
        (guarded,), _ = run_redteam([UrlTarget(srv.url)], options)
    (result,) = guarded.results
    assert result.judgement == "refused_by_server" and result.success is False
    assert "content_policy_violation" not in result.reason and result.reason.startswith("server:")
    with pytest.raises(Exception, match="fix: start the server"):
        UrlTarget("http://127.0.0.1:9/v1", model="x").answer([[("user", "hi")]], 2)


class _Local:
    name = "local"
    special_tokens = ()

    def __init__(self, engine):
        from tunelab.security.redteam_targets import EngineTarget

        self.inner = EngineTarget("tiny", engine=engine, batch_size=1)

    def answer(self, conversations, max_new_tokens):
        return self.inner.answer(conversations, max_new_tokens)


def test_bad_flags_fail_before_loading_a_model(tmp_path):
    from tunelab.cli.main import main

    assert main(["redteam", "tiny", "--guardrails", "sometimes"]) == 2
    assert main(["redteam", "tiny", "--categories", "nope"]) == 2
    assert main(["redteam", "tiny", "--benign", "some"]) == 2
    assert main(["redteam", "tiny", "--canary-file", str(Path(tmp_path) / "missing.txt")]) == 2
