"""A small renderer for the subset of Go's ``text/template`` that Ollama chat templates use.

Why: an Ollama ``TEMPLATE`` is a Go template, and the only honest check that our translation of
a Jinja chat template is right is to render both on the same conversation and compare the text.
Ollama itself is not available here, so this module implements Go's semantics for what the
translated (and most hand-written Ollama) templates use: text, ``{{- ... -}}`` trimming,
``if / else if / else / end``, ``range $i, $m := .Messages``, variable declaration and
assignment, field access (``.Role``, ``$m.Content``, ``$.Messages``), string/number literals,
parenthesised calls and the built-ins ``eq ne and or not len slice index``.
Reference: https://pkg.go.dev/text/template (truthiness, ``eq`` with several arguments, scoping).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunelab.data.chat_layout import TemplateError

_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+)')


def _truth(value: Any) -> bool:
    """Go's truthiness: false, 0, nil and empty strings/slices/maps are false."""
    return bool(value)


def _slice(x, *idx):
    return x[idx[0] : idx[1]] if len(idx) == 2 else x[idx[0] :] if idx else x


def _and(*args):
    for a in args:
        if not _truth(a):
            return a
    return args[-1]


def _or(*args):
    for a in args:
        if _truth(a):
            return a
    return args[-1]


FUNCS: dict[str, Callable[..., Any]] = {
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "and": _and,
    "or": _or,
    "not": lambda a: not _truth(a),
    "len": len,
    "slice": _slice,
    "index": lambda x, *keys: _index(x, keys),
}


def _index(x, keys):
    for k in keys:
        x = x[k]
    return x


@dataclass
class _Node:
    kind: str  # "text" | "expr" | "if" | "range" | "decl" | "assign"
    text: str = ""
    expr: list = field(default_factory=list)
    branches: list[tuple[list | None, list[_Node]]] = field(default_factory=list)  # if: (cond, body)
    names: list[str] = field(default_factory=list)  # range / decl variables
    body: list[_Node] = field(default_factory=list)


def _action_end(source: str, start: int) -> int:
    """Index of the ``}}`` closing the action opened before ``start``; string literals may hold ``}}``."""
    i = start
    while i < len(source):
        if source[i] == '"':
            i += 1
            while i < len(source) and source[i] != '"':
                i += 2 if source[i] == "\\" else 1
        elif source.startswith("}}", i):
            return i
        i += 1
    raise TemplateError("Go template: unclosed {{")


def _lex(source: str) -> list[tuple[str, str]]:
    """Split into ``("text", s)`` and ``("action", s)``, applying ``{{-`` / ``-}}`` whitespace trimming."""
    items: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    while (open_at := source.find("{{", pos)) != -1:
        text = source[pos:open_at]
        body_start = open_at + 2
        trim_before = source[body_start : body_start + 1] == "-" and source[body_start + 1 : body_start + 2].isspace()
        end = _action_end(source, body_start)
        body = source[body_start + (2 if trim_before else 0) : end]
        trim_after = len(body) >= 2 and body[-1] == "-" and body[-2].isspace()
        text = text.lstrip() if trim_next else text
        text = text.rstrip() if trim_before else text
        if text:
            items.append(("text", text))
        items.append(("action", (body[:-2] if trim_after else body).strip()))
        trim_next, pos = trim_after, end + 2
    tail = source[pos:].lstrip() if trim_next else source[pos:]
    if tail:
        items.append(("text", tail))
    return items


def _tokens(expr: str) -> list[str]:
    return [t for t in _TOKEN.findall(expr) if t]


def _parse(items: list[tuple[str, str]], i: int, stop: tuple[str, ...]) -> tuple[list[_Node], int, str]:
    """Parse until an action starting with one of ``stop``; returns (nodes, next index, stop action)."""
    nodes: list[_Node] = []
    while i < len(items):
        kind, text = items[i]
        i += 1
        if kind == "text":
            nodes.append(_Node("text", text=text))
            continue
        head = text.split(None, 1)[0] if text else ""
        if head in stop or text in stop:
            return nodes, i, text
        if head == "if":
            node, i = _parse_if(items, i, text[2:].strip())
            nodes.append(node)
        elif head == "range":
            names, _, pipe = text[5:].partition(":=")
            body, i, _ = _parse(items, i, ("end",))
            nodes.append(_Node("range", names=[n.strip() for n in names.split(",")], expr=_tokens(pipe), body=body))
        elif re.match(r"^\$\w*\s*:?=", text):
            name, op, pipe = re.match(r"^(\$\w*)\s*(:?=)(.*)$", text, re.S).groups()
            nodes.append(_Node("decl" if op == ":=" else "assign", names=[name], expr=_tokens(pipe)))
        elif text.startswith("/*"):
            continue
        else:
            nodes.append(_Node("expr", expr=_tokens(text)))
    if stop:
        raise TemplateError(f"Go template: missing {{{{ {stop[0]} }}}}")
    return nodes, i, ""


def _parse_if(items, i, cond: str) -> tuple[_Node, int]:
    node = _Node("if")
    while True:
        body, i, stopped = _parse(items, i, ("else", "end"))
        node.branches.append((_tokens(cond), body))
        if stopped == "end":
            return node, i
        rest = stopped[4:].strip()
        if rest.startswith("if "):
            cond = rest[3:]
            continue
        body, i, _ = _parse(items, i, ("end",))
        node.branches.append((None, body))
        return node, i


class _Scope:
    def __init__(self, root: Any):
        self.root, self.frames = root, [{"$": root}]

    def get(self, name: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise TemplateError(f"Go template: undefined variable {name}")

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f"Go template: assignment to undeclared {name}")


def _field(value: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        value = value.get(part) if isinstance(value, dict) else getattr(value, part)
    return value


def _operand(tok: list[str], pos: int, dot: Any, scope: _Scope) -> tuple[Any, int]:
    t = tok[pos]
    if t == "(":
        value, pos = _command(tok, pos + 1, dot, scope, closing=True)
        while pos < len(tok) and tok[pos].startswith("."):  # (expr).Field
            value, pos = _field(value, tok[pos]), pos + 1
        return value, pos
    if t.startswith('"'):
        return json.loads(t), pos + 1
    if re.fullmatch(r"-?\d+", t):
        return int(t), pos + 1
    if t in ("true", "false"):
        return t == "true", pos + 1
    if t.startswith("$"):
        name, _, path = t.partition(".")
        return _field(scope.get(name), path), pos + 1
    if t.startswith("."):
        return _field(dot, t), pos + 1
    raise TemplateError(f"Go template: unexpected {t!r}")


def _command(tok: list[str], pos: int, dot: Any, scope: _Scope, closing: bool = False) -> tuple[Any, int]:
    """Evaluate ``fn arg...`` or a single operand; stops at ``)`` when ``closing``."""
    fn = FUNCS.get(tok[pos]) if pos < len(tok) else None
    if fn is not None:
        pos += 1
    args = []
    while pos < len(tok) and tok[pos] != ")":
        value, pos = _operand(tok, pos, dot, scope)
        args.append(value)
    if closing:
        if pos >= len(tok):
            raise TemplateError("Go template: missing )")
        pos += 1
    if fn is not None:
        return fn(*args), pos
    if len(args) != 1:
        raise TemplateError(f"Go template: cannot evaluate {' '.join(tok)!r}")
    return args[0], pos


def _eval(tok: list[str], dot: Any, scope: _Scope) -> Any:
    value, pos = _command(tok, 0, dot, scope)
    if pos != len(tok):
        raise TemplateError(f"Go template: trailing tokens in {' '.join(tok)!r}")
    return value


def _exec(nodes: list[_Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "expr":
            value = _eval(node.expr, dot, scope)
            out.append("" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
        elif node.kind == "decl":
            scope.frames[-1][node.names[0]] = _eval(node.expr, dot, scope)
        elif node.kind == "assign":
            scope.assign(node.names[0], _eval(node.expr, dot, scope))
        elif node.kind == "if":
            for cond, body in node.branches:
                if cond is None or _truth(_eval(cond, dot, scope)):
                    scope.frames.append({})
                    _exec(body, dot, scope, out)
                    scope.frames.pop()
                    break
        elif node.kind == "range":
            for i, item in enumerate(_eval(node.expr, dot, scope) or []):
                names = node.names if len(node.names) == 2 else [None, *node.names]
                scope.frames.append({k: v for k, v in zip(names, (i, item), strict=True) if k})
                _exec(node.body, item, scope, out)
                scope.frames.pop()


def render_go_template(source: str, data: dict[str, Any]) -> str:
    """Render ``source`` with ``data`` as the root (``.``); e.g. ``{"Messages": [{"Role", "Content"}]}``."""
    nodes, _, _ = _parse(_lex(source), 0, ())
    out: list[str] = []
    _exec(nodes, data, _Scope(data), out)
    return "".join(out)


def ollama_messages(messages: list[dict[str, str]]) -> dict[str, Any]:
    """The data Ollama passes to a chat TEMPLATE for ``messages`` (OpenAI-style dicts)."""
    return {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
