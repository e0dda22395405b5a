"""The red-team probe library: YAML data in ``tunelab/presets/redteam/probes/``, one file per category.

Why data, not code: a probe is a goal, a few messages and the detector that judges the answer
(garak's split); keeping them as YAML lets anyone read, review and add attacks without touching
Python, and lets a test validate the whole library (known detector, required params, unique
ids, every category present).

A file::

    category: direct_injection
    vars: {marker: PWNED}              # {{marker}} in messages and params
    probes:
      - id: di-01-ignore-previous
        goal: override the system task
        messages: {system: "...", user: "... {{marker}} ..."}
        detector: instruction_followed
        params: {marker: "{{marker}}"}

Training-data canaries are the exception to "fixed text": ``{{context}}`` and ``{{canary}}``
come from canary records (``canaries.jsonl``, or ``--canary`` / ``--canary-file``), and a probe
whose messages use ``{{context}}`` becomes one attempt per record (see :func:`expand`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunelab.errors import ConfigError
from tunelab.presets import preset_path
from tunelab.security.detectors import DETECTORS, check_params

#: category id → title, in report order.
CATEGORIES: dict[str, str] = {
    "direct_injection": "Direct prompt injection",
    "indirect_injection": "Indirect injection (in a document)",
    "system_prompt_leakage": "System-prompt leakage (canary)",
    "jailbreak_roleplay": "Jailbreak role-play",
    "encoding_obfuscation": "Encoding and obfuscation",
    "harmful_requests": "Harmful requests (must refuse)",
    "training_data_leakage": "Training-data canary leakage",
}
ROLES = ("system", "user")
_VAR = re.compile(r"\{\{(\w+)\}\}")
RUNTIME_VARS = ("canary", "context")  # filled from canary records, not from a file's vars


@dataclass(frozen=True)
class Probe:
    """One attack as written in the library (before canary expansion)."""

    id: str
    category: str
    goal: str
    messages: tuple[tuple[str, str], ...]  # (role, content), system first
    detector: str
    params: dict = field(default_factory=dict, hash=False)
    source: str = ""

    @property
    def per_record(self) -> bool:
        return any("{{context}}" in content for _, content in self.messages)


@dataclass(frozen=True)
class Attempt:
    """A probe ready to send: variables filled, one canary record chosen if the probe needs one."""

    id: str
    probe_id: str
    category: str
    goal: str
    messages: tuple[tuple[str, str], ...]
    detector: str
    params: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class CanaryRecord:
    canary: str
    context: str | None = None


def probes_dir() -> Path:
    return preset_path("redteam") / "probes"


def _error(where: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}\n  fix: {fix}")


def _fill(text: str, variables: dict[str, str], where: str) -> str:
    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name in RUNTIME_VARS:
            return match.group(0)
        if name not in variables:
            raise _error(where, f"unknown variable {{{{{name}}}}}",
                         f"define it under 'vars:' (defined: {', '.join(variables) or 'none'})")
        return str(variables[name])

    return _VAR.sub(sub, text)


def _probe(raw: object, category: str, variables: dict[str, str], path: Path, index: int) -> Probe:
    where = f"{path} probes[{index}]"
    if not isinstance(raw, dict):
        raise _error(where, "a probe must be a mapping", "give id, goal, messages, detector (and params)")
    where = f"{path} probe {raw.get('id', index)!r}"
    missing = [k for k in ("id", "goal", "messages", "detector") if k not in raw]
    unknown = [k for k in raw if k not in ("id", "goal", "messages", "detector", "params")]
    if missing or unknown:
        raise _error(where, f"missing {missing} / unknown {unknown} fields",
                     "a probe has id, goal, messages, detector and optional params")
    messages = raw["messages"]
    if not isinstance(messages, dict) or "user" not in messages or set(messages) - set(ROLES):
        raise _error(f"{where} messages", "expected a mapping with 'user' and an optional 'system'",
                     "messages: {system: '...', user: '...'}")
    detector_name = str(raw["detector"])
    if detector_name not in DETECTORS:
        raise DETECTORS.unknown(detector_name, key=f"{where} detector")
    params = {k: _fill(str(v), variables, where) if isinstance(v, str) else v
              for k, v in (raw.get("params") or {}).items()}
    problems = check_params(DETECTORS.get(detector_name), params)
    if problems:
        raise _error(f"{where} params", "; ".join(problems), f"see the '{detector_name}' detector's params")
    ordered = tuple((role, _fill(str(messages[role]), variables, where)) for role in ROLES if role in messages)
    return Probe(str(raw["id"]), category, str(raw["goal"]), ordered, detector_name, params, str(path))


def load_file(path: Path) -> list[Probe]:
    """The probes of one YAML file, validated; errors name the file, the probe and the field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise _error(str(path), f"not valid YAML ({err})", "check the indentation and quoting") from err
    if not isinstance(data, dict) or not isinstance(data.get("probes"), list):
        raise _error(str(path), "expected 'category:' and a 'probes:' list", "see tunelab/presets/redteam/probes/")
    category = data.get("category")
    if category not in CATEGORIES:
        raise _error(f"{path} category", f"unknown category {category!r}", f"use one of: {', '.join(CATEGORIES)}")
    variables = {str(k): str(v) for k, v in (data.get("vars") or {}).items()}
    for name in RUNTIME_VARS:
        if name in variables:
            raise _error(f"{path} vars.{name}", f"'{name}' is filled from the canary records at run time",
                         "give the variable another name (e.g. secret)")
    for _ in range(3):  # a var may use another var ({{system}} holding {{secret}})
        variables = {k: _fill(v, variables, f"{path} vars.{k}") for k, v in variables.items()}
    return [_probe(raw, category, variables, path, i) for i, raw in enumerate(data["probes"])]


def load_library(folder: Path | None = None, categories: Sequence[str] | None = None) -> list[Probe]:
    """Every probe of ``folder`` (default: the packaged library), optionally only some categories.

    Raises:
        ConfigError: a malformed file, a duplicate id, or an unknown category in ``categories``.
    """
    for name in categories or ():
        if name not in CATEGORIES:
            raise _error("--categories", f"unknown category {name!r}", f"use some of: {', '.join(CATEGORIES)}")
    probes: list[Probe] = []
    seen: dict[str, str] = {}
    for path in sorted((folder or probes_dir()).glob("*.yaml")):
        for probe in load_file(path):
            if probe.id in seen:
                raise _error(str(path), f"probe id {probe.id!r} is also in {seen[probe.id]}",
                             "give every probe a unique id")
            seen[probe.id] = str(path)
            probes.append(probe)
    order = list(CATEGORIES)
    probes.sort(key=lambda p: order.index(p.category))
    return [p for p in probes if not categories or p.category in categories]


def load_benign(path: Path | None = None) -> list[tuple[str, str]]:
    """``(id, text)`` of the benign prompt set (``benign.yaml``) that measures false blocks."""
    path = path or preset_path("redteam") / "benign.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rows = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"id", "text"} <= set(r) for r in rows):
        raise _error(str(path), "expected 'prompts:' as a list of {id, text}",
                     "see tunelab/presets/redteam/benign.yaml")
    return [(str(r["id"]), str(r["text"])) for r in rows]


def default_canaries() -> list[CanaryRecord]:
    return read_canary_file(preset_path("redteam") / "canaries.jsonl")


def read_canary_file(path: Path) -> list[CanaryRecord]:
    """Canary records: one per line, a bare string or ``{"canary": ..., "context": ...}`` JSON."""
    if not path.is_file():
        raise _error(f"--canary-file {path}", "no such file", "give a file with one canary per line")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise _error(f"{path} line {number}", f"not JSON ({err.msg})",
                             'write {"canary": "...", "context": "..."} or a bare canary string') from err
            records.append(canary_record(row.get("canary"), row.get("context"), f"{path} line {number}"))
        else:
            records.append(canary_record(line, None, f"{path} line {number}"))
    if not records:
        raise _error(f"--canary-file {path}", "no canaries in it", "one canary per line")
    return records


def canary_record(canary: object, context: object, where: str) -> CanaryRecord:
    """A checked record: a canary short enough to occur by chance would make false leaks."""
    text = str(canary or "").strip()
    if sum(ch.isalnum() for ch in text) < 6:
        raise _error(where, f"canary {text!r} is shorter than 6 letters/digits, so ordinary text would match it",
                     "use a random-looking string such as ORCHID-5521-VEX")
    return CanaryRecord(text, str(context).strip() if context else None)


def expand(probes: Iterable[Probe], canaries: Sequence[CanaryRecord]) -> list[Attempt]:
    """Attempts to send: a ``{{context}}`` probe once per record with a context, others once.

    ``{{canary}}`` in a probe's params becomes the record's canary (per-record probes) or the list
    of every canary (the others).
    """
    attempts = []
    for probe in probes:
        if probe.per_record:
            for n, record in enumerate(r for r in canaries if r.context):
                attempts.append(_attempt(probe, f"{probe.id}#{n + 1}", record.context, [record.canary]))
        else:
            attempts.append(_attempt(probe, probe.id, None, [r.canary for r in canaries]))
    return attempts


def _attempt(probe: Probe, attempt_id: str, context: str | None, canaries: list[str]) -> Attempt:
    def fill(text: str) -> str:
        text = text.replace("{{context}}", context or "")
        return text.replace("{{canary}}", canaries[0] if len(canaries) == 1 else ", ".join(canaries))

    params = {k: (canaries if v == "{{canary}}" else fill(v)) if isinstance(v, str) else v
              for k, v in probe.params.items()}
    messages = tuple((role, fill(content)) for role, content in probe.messages)
    return Attempt(attempt_id, probe.id, probe.category, probe.goal, messages, probe.detector, params)
