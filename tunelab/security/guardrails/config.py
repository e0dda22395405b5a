"""Guardrail settings from the command line (``--guardrail NAME[=ACTION]``) and a YAML file.

A file maps each guardrail to an action or to its options::

    injection: block
    special_tokens: redact
    pii: {action: redact, kinds: [email, phone, card]}
    length: {action: block, max_chars: 8000}
    leakage: {canaries: [ZEBRA-4471], min_words: 8}

(optionally under a top-level ``guardrails:`` key). Flags given with the file override the
file's action for the same name, so ``--guardrails-config strict.yaml --guardrail pii=flag``
reads as "the strict set, but only flag PII".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tunelab.errors import ConfigError
from tunelab.security.guardrails.base import ACTIONS, GUARDRAILS, parse_spec
from tunelab.security.guardrails.chain import GuardrailChain
from tunelab.security.guardrails.scanners import BUILTIN

Spec = tuple[str, str | None]


def expand_specs(specs: Sequence[Spec]) -> list[Spec]:
    """``all`` → every built-in guardrail; a name given twice keeps its last action."""
    merged: dict[str, str | None] = {}
    for name, action in specs:
        for one in BUILTIN if name == "all" else [GUARDRAILS.canonical(name)]:
            merged[one] = action if action is not None else merged.get(one)
    return list(merged.items())


def load_guardrail_config(path: str | Path) -> tuple[list[Spec], dict[str, dict]]:
    """``(specs, options)`` from a YAML guardrails file.

    Raises:
        ConfigError: unreadable file, not a mapping, unknown guardrail or a bad entry (the
            message names the file and the key).
    """
    import yaml

    p = Path(path)
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"--guardrails-config {p}: cannot read it ({err})\n  fix: pass a readable YAML file") from err
    if isinstance(tree, dict) and set(tree) == {"guardrails"}:
        tree = tree["guardrails"] or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{p}: expected a mapping of guardrail name to action or options\n"
                          "  fix: e.g. 'injection: block' on one line, 'pii: {action: redact}' on another")
    specs: list[Spec] = []
    options: dict[str, dict] = {}
    for name, entry in tree.items():
        where = f"{p}: {name}"
        if str(name) not in GUARDRAILS:
            raise GUARDRAILS.unknown(str(name), key=str(p))
        if entry is None or isinstance(entry, str):
            specs.append((str(name), entry))
        elif isinstance(entry, dict):
            entry = dict(entry)
            action = entry.pop("action", None)
            if action is not None and action not in ACTIONS:
                raise ConfigError(f"{where}.action: {action!r} is not one of {', '.join(ACTIONS)}\n"
                                  f"  fix: {name}: {{action: block}}")
            specs.append((str(name), action))
            options[GUARDRAILS.canonical(str(name))] = entry
        else:
            raise ConfigError(f"{where}: expected an action ({', '.join(ACTIONS)}) or a mapping of options, "
                              f"got {entry!r}\n  fix: {name}: block")
    return specs, options


def chain_from_cli(specs: Sequence[str] = (), config: str | Path | None = None) -> GuardrailChain:
    """The chain ``tunelab serve`` builds from its ``--guardrail`` flags and ``--guardrails-config``."""
    file_specs, options = load_guardrail_config(config) if config else ([], {})
    merged = expand_specs(file_specs + [parse_spec(s) for s in specs])
    for name, _ in merged:
        GUARDRAILS.get(name)  # every name checked before any is built
    return GuardrailChain.from_specs([f"{n}={a}" if a else n for n, a in merged], options)
