"""The run config described as text: every field's key, type, default and meaning.

``tunelab config explain`` prints these rows; they come from the pydantic schemas themselves
(:class:`tunelab.config.RunConfig` and each method's ``method_args`` schema in
:mod:`tunelab.methods.args`), so the documentation cannot drift from what is validated. Types
are written the way a user writes them in YAML terms (``int``, ``str | None``,
``list[str] | 'all-linear'``), never as Python reprs like ``<class 'int'>``. Torch-free.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from tunelab.config import RunConfig
from tunelab.errors import ConfigError
from tunelab.methods.args import METHOD_ARGS


@dataclass(frozen=True)
class FieldDoc:
    """One config field as ``tunelab config explain`` shows it."""

    key: str  # what the user writes: training.micro_batch_size, method_args.beta
    type: str
    default: str
    description: str
    group: str  # heading it is listed under: "training", "method_args (method: dpo)"
    path: str  # what a SECTION argument matches: the key, or method_args.<method>.<field>


def type_label(annotation: Any) -> str:
    """``int``, ``float | None``, ``list[str] | 'all-linear'``, ``'auto' | 'fp32'`` ..."""
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_label(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_label(a) for a in args)}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def default_label(value: Any) -> str:
    """A default as it would be written in the YAML config (``null``, ``true``, ``[0.9, 0.999]``)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def _summary(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").strip().splitlines()[0].replace("``", "`")


def _fields(model: type[BaseModel], prefix: str, group: str, path_prefix: str) -> list[FieldDoc]:
    """Rows of ``model``'s own fields (nested sections are listed under their own heading)."""
    rows = []
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            continue
        rows.append(
            FieldDoc(
                key=prefix + name,
                type=type_label(field.annotation),
                default=default_label(field.get_default(call_default_factory=True)),
                description=field.description or "",
                group=group,
                path=path_prefix + name,
            )
        )
    return rows


def all_fields() -> list[FieldDoc]:
    """Every field of a run config, then every method's ``method_args`` fields (by method)."""
    rows: list[FieldDoc] = []
    rows += _fields(RunConfig, "", "run", "")
    for name, field in RunConfig.model_fields.items():
        if _is_section(field.annotation):
            rows += _fields(field.annotation, f"{name}.", name, f"{name}.")
    for method in METHOD_ARGS:
        group = f"method_args (method: {method})"
        rows += _fields(METHOD_ARGS.get(method), "method_args.", group, f"method_args.{method}.")
    return rows


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def group_summaries() -> dict[str, str]:
    """Heading → one line saying what the group is."""
    out = {"run": _summary(RunConfig)}
    for name, field in RunConfig.model_fields.items():
        if _is_section(field.annotation):
            out[name] = _summary(field.annotation)
    for method in METHOD_ARGS:
        out[f"method_args (method: {method})"] = _summary(METHOD_ARGS.get(method))
    return out


def explain(section: str | None = None) -> list[FieldDoc]:
    """The fields under ``section`` (a key prefix such as ``training``, ``training.micro`` or
    ``method_args.dpo``); all of them when ``section`` is None.

    Raises:
        ConfigError: nothing matches ``section`` (the message lists the sections).
    """
    rows = all_fields()
    if not section:
        return rows
    chosen = [r for r in rows if r.path.startswith(section) or r.key.startswith(section)]
    if chosen or section.removeprefix("method_args.") in METHOD_ARGS:  # sft: a method without options
        return chosen
    sections = ["model", "adapter", "data", "training", "method_args", *(f"method_args.{m}" for m in METHOD_ARGS)]
    raise ConfigError(
        f"config explain: no config key starts with '{section}'.\n  fix: use a section ({', '.join(sections)}) "
        "or a key prefix such as training.micro"
    )


def render_text(rows: list[FieldDoc], width: int | None = None) -> str:
    """Plain-text listing: a heading per group, ``key  type  default: …`` on one line (never
    broken, whatever the width), the meaning indented below it and wrapped at word boundaries
    to ``width`` (no wrapping when ``width`` is None, e.g. in a pipe)."""
    import textwrap

    summaries = group_summaries()
    lines: list[str] = []
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            if lines:
                lines.append("")
            lines.append(f"{group}: {summaries.get(group, '')}".rstrip(": "))
        lines.append(f"  {row.key}  {row.type}  default: {row.default}")
        if row.description:
            indent = " " * 6
            if width:
                lines += textwrap.wrap(row.description, max(width, 40), initial_indent=indent,
                                       subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
            else:
                lines.append(indent + row.description)
    return "\n".join(lines)
