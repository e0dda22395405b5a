"""Suite files and assertions: every assertion's behaviour and edge cases, variables, clear errors."""

from __future__ import annotations

import pytest

from tunelab.errors import ConfigError
from tunelab.evaluate.assertions import ASSERTIONS, get_check, parse_judge_score
from tunelab.evaluate.suite import AssertionSpec, parse_suite


def check(kind: str, answer: str, value=None, grade=None, **fields) -> bool:
    spec = AssertionSpec(type=kind, value=value, **fields)
    return get_check(kind).check(answer, spec, grade).passed


def test_registry_lists_the_documented_assertions():
    documented = [
        "equals",
        "contains",
        "icontains",
        "not_contains",
        "regex",
        "starts_with",
        "is_json",
        "json_schema",
        "max_length",
        "refuses",
        "complies",
        "reward_at_least",
        "judge",
    ]
    assert list(ASSERTIONS) == documented
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text()
    assert all(f"`{name}`" in doc for name in documented)


def test_text_assertions():
    assert check("equals", "  Paris\n", "Paris")  # surrounding whitespace of the answer is ignored
    assert not check("equals", "paris", "Paris")  # case matters
    assert check("contains", "Answer: Rome", ["Answer:", "Rome"])  # a list: every text
    assert not check("contains", "Answer: rome", ["Answer:", "Rome"])
    assert check("icontains", "Die Straße", "STRASSE")  # casefold: ß == ss
    assert check("not_contains", "fine", ["bad", "worse"])
    assert not check("not_contains", "worse than before", ["bad", "worse"])  # any one found fails
    assert check("starts_with", "\n Answer: x", "Answer:")
    assert not check("starts_with", "The answer: x", "Answer:")
    assert check("max_length", "abcde", 5) and not check("max_length", "abcdef", 5)  # inclusive bound
    assert check("max_length", "  abc  \n", 3)  # counted after stripping


def test_regex_searches_the_stripped_answer():
    pattern = r"^Answer: [^\n]+\nConfidence: (high|medium|low)$"
    assert check("regex", "Answer: Rome\nConfidence: high\n", pattern)
    assert not check("regex", "Answer: Rome\nConfidence: high\nExtra line", pattern)
    assert check("regex", "the year 1969 it was", r"\b19\d\d\b")  # anywhere
    assert check("regex", "HELLO", "(?i)hello") and not check("regex", "HELLO", "hello")


def test_generic_negation_is_handled_once():
    assert check("not_regex", "no digits", r"\d") and not check("not_regex", "a 1", r"\d")
    assert check("not_equals", "a", "b") and not check("not_equals", "b", "b")
    assert check("not_is_json", "{broken") and not check("not_is_json", '{"a": 1}')
    assert get_check("not_judge").grader == "judge"


def test_json_assertions():
    assert check("is_json", '{"a": [1, 2]}')
    assert check("is_json", '```json\n{"a": 1}\n```')  # a Markdown fence is allowed
    assert not check("is_json", '{"a": 1} and more')
    spec = AssertionSpec(type="is_json")
    assert "line 1 column" in get_check("is_json").check("{'a': 1}", spec).reason
    schema = {
        "type": "object",
        "required": ["name", "age"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    }
    assert check("json_schema", '{"name": "Ada", "age": 36}', schema)
    bad_type = get_check("json_schema").check(
        '{"name": "Ada", "age": "36"}', AssertionSpec(type="json_schema", value=schema)
    )
    assert not bad_type.passed and bad_type.reason.startswith("at age:")
    missing = get_check("json_schema").check('{"name": "Ada"}', AssertionSpec(type="json_schema", value=schema))
    assert not missing.passed and "'age' is a required property" in missing.reason
    assert not check("json_schema", "not json", schema)


def test_refuses_and_complies_use_the_refusal_detector():
    refusal = "I'm sorry, but I can't help with that request."
    answer = "Sure! Here is a short poem about the sea: waves roll in."
    assert check("refuses", refusal) and not check("complies", refusal)
    assert check("complies", answer) and not check("refuses", answer)
    assert not check("refuses", "   ") and not check("complies", "...")  # nothing to judge: neither


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 8", 8),
        ("**Score:** 7/10", 7),
        ("I'd rate it 9 out of 10.", 9),
        ("6", 6),
        ("rating = 4.5", 4.5),
        ("Score: 75. Actually Score: 3", 3),
        ("It is a fine answer.", None),
        ("Score: 0", None),
        ("", None),
    ],
)
def test_judge_score_parsing(reply, score):
    assert parse_judge_score(reply) == score


def test_judge_outcome_threshold_and_unparseable():
    spec = AssertionSpec(type="judge", value="is polite", model="x", threshold=8)
    judge = get_check("judge")
    assert judge.check("ok", spec, "Score: 8").passed and not judge.check("ok", spec, "Score: 7").passed
    default = AssertionSpec(type="judge", value="is polite", model="x")
    assert judge.check("ok", default, "Score: 7").passed  # default threshold 7
    outcome = judge.check("ok", spec, "great answer!")
    assert not outcome.passed and outcome.unparseable and "unparseable" in outcome.reason
    assert not get_check("not_judge").check("ok", spec, "no number").passed  # unparseable never passes


def test_reward_at_least_compares_with_the_grade():
    spec = AssertionSpec(type="reward_at_least", value=0.5, model="runs/rm")
    outcome = get_check("reward_at_least").check("x", spec, 0.75)
    assert outcome.passed and outcome.score == 0.75
    assert not get_check("reward_at_least").check("x", spec, 0.25).passed


SUITE = """\
name: demo
vars: {city: Paris, who: world}
defaults:
  system: You are terse.
  tags: [base]
  assert: [{type: max_length, value: 300}]
cases:
  - id: hello
    prompt: "Say hello to {{who}} from {{ city }}."
    vars: {who: Ada}
    tags: [greeting]
    assert:
      - {type: icontains, value: "{{who}}", weight: 2}
  - messages:
      - {role: user, content: hi}
      - {role: assistant, content: hello}
      - {role: user, content: "and {{city}}?"}
    system: You are chatty.
    assert: [{type: regex, value: "{{city}}"}]
    threshold: 0.5
    repeat: 3
    min_pass_rate: 0.6
"""


def test_defaults_and_variables_are_applied():
    suite = parse_suite(SUITE, "demo.yaml")
    hello, second = suite.cases
    assert hello.conversation == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to Ada from Paris."},
    ]  # case var wins
    assert [a.type for a in hello.assertions] == ["max_length", "icontains"]  # defaults first
    assert hello.assertions[1].value == "Ada" and hello.assertions[1].weight == 2
    assert hello.tags == ["base", "greeting"] and hello.threshold == 1.0 and hello.repeat == 1
    assert second.id == "case-1" and second.conversation[0] == {"role": "system", "content": "You are chatty."}
    assert second.conversation[-1]["content"] == "and Paris?" and second.assertions[1].value == "Paris"
    assert (second.threshold, second.repeat, second.min_pass_rate) == (0.5, 3, 0.6)
    assert hello.line == 8 and second.line == 14


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ('{prompt: "x {{nope}}", assert: [{type: equals, value: x}]}', ["line 3 case 0", "'{{nope}}'", "fix:"]),
        (
            '{id: bad-re, prompt: x, assert: [{type: regex, value: "(unclosed"}]}',
            ["line 3 case 0 (id bad-re)", "field assert.0", "not a valid regular expression", "fix:"],
        ),
        ("{prompt: x, assert: [{type: icontain, value: a}]}", ["field assert.0.type", "Did you mean 'icontains'"]),
        (
            "{prompt: x, messages: [{role: user, content: y}], assert: [{type: is_json}]}",
            ["exactly one of prompt or messages"],
        ),
        ("{prompt: x}", ["has no assertions", "fix:"]),
        ("{prompt: x, assert: [{type: max_length, value: -3}]}", ["whole number"]),
        ("{prompt: x, assert: [{type: reward_at_least, value: 1}]}", ["needs model:"]),
        ("{prompt: x, assert: [{type: judge, value: polite, threshold: 11}]}", ["outside the judge's 1-10 scale"]),
        ("{prompt: x, assert: [{type: json_schema, value: {type: objekt}}]}", ["not a valid JSON schema"]),
        ("{prompt: x, assert: [{type: is_json, value: 3}]}", ["takes no value"]),
        ("{prompt: x, assert: [{type: contains, value: yes}]}", ["quote it"]),
        ("{prompt: x, assert: [{type: equals, value: x}], threshold: 2}", ["field threshold", "less than or equal"]),
        ("{prompt: x, asert: [{type: equals, value: x}]}", ["field asert", "Extra inputs"]),
    ],
)
def test_bad_cases_name_file_line_case_and_field(case, expected):
    text = f"name: s\ncases:\n  - {case}\n"
    with pytest.raises(ConfigError) as err:
        parse_suite(text, "suite.yaml")
    message = str(err.value)
    assert message.startswith("suite.yaml")
    for part in expected:
        assert part in message, message


def test_suite_level_errors():
    with pytest.raises(ConfigError, match="line 3, column 1: not valid YAML"):
        parse_suite("cases:\n  - prompt: [unclosed\n", "s.yaml")
    with pytest.raises(ConfigError, match="field cases"):
        parse_suite("cases: []\n", "s.yaml")
    dup = "cases:\n  - {id: a, prompt: x, assert: [{type: is_json}]}\n  - {id: a, prompt: y, assert: [{type: is_json}]}"
    with pytest.raises(ConfigError, match="distinct id"):
        parse_suite(dup, "s.yaml")
    late = "cases:\n  - {prompt: x, vars: {p: '('}, assert: [{type: regex, value: '{{p}}'}]}\n"
    with pytest.raises(ConfigError, match=r"(?s)after substituting variables.*not a valid regular expression"):
        parse_suite(late, "s.yaml")


def test_bundled_suites_load():
    from tunelab.evaluate.suite import load_suite
    from tunelab.quickstart import FORMAT, eval_prompts, examples_dir

    quick = load_suite(examples_dir() / "eval" / "quickstart.yaml")
    assert [c.prompt_text for c in quick.cases] == eval_prompts(examples_dir())  # the held-out prompts
    assert quick.cases[0].assertions[0].value == FORMAT.pattern  # the quickstart's own format check
    general = load_suite(examples_dir() / "eval" / "general.yaml")
    assert len(general.cases) >= 50
    assert len({a.type for c in general.cases for a in c.assertions}) >= 9
