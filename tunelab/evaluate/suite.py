"""Test suites: YAML files of cases, each a prompt (or messages) and the assertions its answer must pass.

Why assertion suites: validation loss says a fine-tune fits its data, not that it still answers
the questions users ask. A suite pins down behaviour case by case ("answers in two lines", "refuses
to write malware", "returns valid JSON"), so a regression between a base model and its fine-tune,
or between two fine-tunes, is a named failing case rather than a shifted average. The format
follows promptfoo's: cases with ``vars`` substituted into ``{{var}}`` placeholders and a list of
typed assertions, each with a weight; a case passes when its weighted share of passing assertions
reaches its ``threshold``. Because sampled answers can pass by luck, a case can be sampled
``repeat`` times and must pass at least ``min_pass_rate`` of them.

A suite file::

    name: quickstart-format
    defaults:                  # applied to every case (a case's own fields win)
      max_new_tokens: 32
      assert: [{type: max_length, value: 200}]
    vars: {style: two lines}   # suite-wide variables
    cases:
      - id: capital-italy
        prompt: "What is the capital of {{country}}?"
        vars: {country: Italy}
        tags: [geography]
        assert:
          - {type: icontains, value: rome, weight: 2}
          - {type: regex, value: "^Answer: "}
        threshold: 1.0         # weighted share of assertions that must pass (default: all)
        repeat: 3              # samples of this case
        min_pass_rate: 0.67    # share of samples that must pass

Every problem is reported with the file, the line and index/id of the case, the field and a fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunelab.errors import ConfigError

VAR = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
Role = Literal["system", "user", "assistant"]
M = TypeVar("M", bound=BaseModel)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str


class AssertionSpec(BaseModel):
    """One check on an answer. ``type`` names an entry of :data:`tunelab.evaluate.assertions.ASSERTIONS`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: str = Field(description="Assertion name (equals, contains, regex, judge, ...); not_X negates X.")
    value: Any = Field(None, description="What the assertion compares with (text, pattern, schema, number, rubric).")
    weight: float = Field(1.0, ge=0, description="Weight of this assertion in the case's score.")
    model: str | None = Field(None, description="reward_at_least: reward run; judge: judge model or URL.")
    threshold: float | None = Field(None, description="judge: lowest passing score 1-10 (default 7).")

    @field_validator("type")
    @classmethod
    def _known(cls, name: str) -> str:
        from tunelab.evaluate.assertions import get_check

        try:
            get_check(name)
        except ConfigError as err:  # unknown: the message lists the valid names and the closest
            raise ValueError(str(err).split("\n")[0]) from None
        return name

    @model_validator(mode="after")
    def _value_fits(self) -> AssertionSpec:
        from tunelab.evaluate.assertions import get_check

        get_check(self.type).validate_spec(self)
        return self


class CaseDefaults(BaseModel):
    """Fields a case inherits unless it sets them itself."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    system: str | None = Field(None, description="System prompt placed before the case's messages.")
    tags: list[str] = Field(default_factory=list, description="Tags every case gets (a case adds its own).")
    assertions: list[AssertionSpec] = Field(
        default_factory=list, alias="assert", description="Assertions every case gets (before its own)."
    )
    threshold: float = Field(1.0, ge=0, le=1, description="Weighted share of assertions a sample must pass.")
    repeat: int = Field(1, ge=1, description="Samples per case.")
    min_pass_rate: float = Field(1.0, ge=0, le=1, description="Share of a case's samples that must pass.")
    max_new_tokens: int | None = Field(None, ge=1, description="Answer length limit (CLI --max-new-tokens wins).")


class Case(BaseModel):
    """One prompt and what its answer must satisfy (after defaults and variables are applied)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str | None = Field(None, description="Stable name in reports (default: case-N).")
    prompt: str | None = Field(None, description="The user message (or give messages).")
    messages: list[Message] | None = Field(None, description="A whole conversation ending with a user turn.")
    system: str | None = None
    vars: dict[str, str | int | float | bool] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    assertions: list[AssertionSpec] = Field(default_factory=list, alias="assert")
    weight: float = Field(1.0, ge=0, description="Weight of the case in the suite's pass rate.")
    threshold: float | None = Field(None, ge=0, le=1)
    repeat: int | None = Field(None, ge=1)
    min_pass_rate: float | None = Field(None, ge=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_input(self) -> Case:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None and (not self.messages or self.messages[-1].role != "user"):
            raise ValueError("messages must end with a user message (the turn the model answers)")
        return self


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    defaults: CaseDefaults = Field(default_factory=CaseDefaults)
    vars: dict[str, str | int | float | bool] = Field(default_factory=dict)
    cases: list[dict[str, Any]] = Field(min_length=1, description="The cases (validated one by one).")


class ResolvedCase(BaseModel):
    """A case ready to run: defaults merged, variables substituted, conversation built."""

    id: str
    index: int
    line: int | None
    conversation: list[dict[str, str]]
    tags: list[str]
    assertions: list[AssertionSpec]
    weight: float
    threshold: float
    repeat: int
    min_pass_rate: float
    max_new_tokens: int | None

    @property
    def prompt_text(self) -> str:
        return self.conversation[-1]["content"]


class LoadedSuite(BaseModel):
    name: str
    path: str
    cases: list[ResolvedCase]


def substitute(text: str, variables: dict[str, Any], where: str) -> str:
    """Replace each ``{{name}}``; an unknown name is an error that lists the defined ones."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise ConfigError(
                f"{where}: variable '{{{{{name}}}}}' is not defined (defined: {known}).\n"
                f"  fix: add {name}: ... under the case's vars (or the suite's vars), or remove the placeholder"
            )
        return str(variables[name])

    return VAR.sub(one, text)


def _error_lines(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(case)"
        message = e["msg"].removeprefix("Value error, ")
        lines.append(f"  field {field}: {message}")
    return lines


def _validate(model: type[M], data: Any, head: str, fix: str) -> M:
    """``model`` validated from ``data``, or a ConfigError: ``head``, one line per problem, ``fix``."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError("\n".join([head, *_error_lines(err), f"  fix: {fix}"])) from None


def _case_lines(text: str) -> list[int]:
    """1-based line of each item under ``cases:`` (for messages)."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "cases" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _substituted(spec: AssertionSpec, variables: dict[str, Any], where: str) -> AssertionSpec:
    """``spec`` with variables put into its text fields, validated again (a pattern may change)."""
    fields = spec.model_dump()
    for name in ("value", "model"):
        if isinstance(fields[name], str):
            fields[name] = substitute(fields[name], variables, where)
    if fields == spec.model_dump():
        return spec
    return _validate(
        AssertionSpec, fields, f"{where}: invalid assertion after substituting variables", "check the variable's value"
    )


def _resolve_case(raw: Any, index: int, line: int | None, suite: Suite, source: str) -> ResolvedCase:
    where = f"{source}{f' line {line}' if line else ''} case {index}"
    if isinstance(raw, dict) and raw.get("id"):
        where += f" (id {raw['id']})"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a case must be a mapping, got {raw!r}\n  fix: write prompt: ... and assert: [...]")
    case = _validate(Case, raw, f"{where}: invalid case", "see the fields in docs/evaluation.md (Test suites)")
    d = suite.defaults
    variables = {**suite.vars, **case.vars}
    system = case.system if case.system is not None else d.system
    turns = (
        [{"role": "user", "content": case.prompt}]
        if case.prompt is not None
        else [m.model_dump() for m in case.messages or []]
    )
    if system is not None and turns[0]["role"] != "system":
        turns = [{"role": "system", "content": system}, *turns]
    conversation = [{"role": t["role"], "content": substitute(t["content"], variables, where)} for t in turns]
    assertions = [_substituted(a, variables, where) for a in [*d.assertions, *case.assertions]]
    if not assertions:
        raise ConfigError(
            f"{where}: the case has no assertions, so it cannot fail.\n"
            "  fix: add assert: [{type: contains, value: ...}] (or defaults.assert for every case)"
        )
    if sum(a.weight for a in assertions) <= 0:
        raise ConfigError(f"{where}: every assertion has weight 0.\n  fix: give at least one a positive weight")
    return ResolvedCase(
        id=case.id or f"case-{index}",
        index=index,
        line=line,
        conversation=conversation,
        tags=list(dict.fromkeys([*d.tags, *case.tags])),
        assertions=assertions,
        weight=case.weight,
        threshold=case.threshold if case.threshold is not None else d.threshold,
        repeat=case.repeat or d.repeat,
        min_pass_rate=case.min_pass_rate if case.min_pass_rate is not None else d.min_pass_rate,
        max_new_tokens=case.max_new_tokens or d.max_new_tokens,
    )


def parse_suite(text: str, source: str = "<suite>") -> LoadedSuite:
    """Validate a suite's YAML text into resolved cases (see the module docstring for the format)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{source}{where}: not valid YAML ({getattr(err, 'problem', err)}).\n"
            "  fix: check indentation and quoting there"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite is a mapping with a cases: list.\n  fix: start the file with cases:")
    suite = _validate(
        Suite, data, f"{source}: invalid suite", "a suite has name, description, defaults, vars and cases"
    )
    lines = _case_lines(text)
    cases = [
        _resolve_case(raw, i, lines[i] if i < len(lines) else None, suite, source) for i, raw in enumerate(suite.cases)
    ]
    seen: dict[str, int] = {}
    for case in cases:
        if case.id in seen:
            raise ConfigError(
                f"{source} case {case.index}: id '{case.id}' is also case {seen[case.id]}'s.\n"
                "  fix: give every case a distinct id"
            )
        seen[case.id] = case.index
    name = suite.name or Path(source).stem
    return LoadedSuite(name=name, path=source, cases=cases)


def load_suite(path: str | Path) -> LoadedSuite:
    """Read and validate a suite file.

    Raises:
        ConfigError: the file is missing or invalid; the message names the file, line, case and field.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file not found: {path}\n  fix: check the path (examples: examples/eval/*.yaml)")
    return parse_suite(path.read_text(encoding="utf-8"), str(path))
