"""Recover the layout of a Jinja chat template by rendering it, not by reading its source.

Why: a Modelfile needs the template in Go-template syntax and the stop strings, and a generation
config needs the token that ends an assistant turn. Pattern-matching the Jinja source breaks on
every cosmetic variant (``'\\n'`` vs a literal newline, whitespace control, ``message.role`` vs
``message['role']``). Instead we render the template with sentinel messages and cut the text at
the sentinels, which gives, for each role, the literal text before and after a message's content;
the text a template injects when there is no system message; a header (BOS) and the generation
prompt. The hypothesis "the template is this concatenation" is then checked on several
conversations; a template that does anything else (folds the system prompt into the first user
turn, numbers turns, trims differently per position) is reported as not translatable.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import ModelError

ROLES = ("system", "user", "assistant")
# Sentinels: letters only, so ``| trim``, ``| capitalize``-free templates keep them intact.
_S = {"system": "QZSYSAQZ", "user": "QZUSRAQZ", "assistant": "QZASTAQZ"}


class TemplateError(ModelError):
    """A chat template cannot be analysed or translated (e.g. into an Ollama TEMPLATE)."""


@dataclass(frozen=True)
class ChatLayout:
    """A chat template as literal pieces: ``header + [default_system] + Σ prefix[r] content suffix[r] + gen``.

    Attributes:
        header: text rendered once before everything (usually the BOS token, often empty).
        default_system: text injected when the first message is not a system message.
        prefix: per role, the text right before the message content.
        suffix: per role, the text right after the message content.
        generation_prompt: the text ``add_generation_prompt=True`` appends.
    """

    header: str
    default_system: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation_prompt: str

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        """Render ``messages`` the way the analysed Jinja template does (the checked hypothesis)."""
        parts = [self.header]
        if not messages or messages[0]["role"] != "system":
            parts.append(self.default_system)
        for m in messages:
            parts += [self.prefix[m["role"]], m["content"], self.suffix[m["role"]]]
        if add_generation_prompt:
            parts.append(self.generation_prompt)
        return "".join(parts)

    def turn_terminator(self) -> str:
        """The text that closes an assistant turn (e.g. ``<|im_end|>``), without surrounding whitespace."""
        return self.suffix["assistant"].strip()

    def next_turn_marker(self) -> str:
        """The text that opens a user turn (e.g. ``<|im_start|>user``): a model that runs on emits it."""
        return self.prefix["user"].strip()


def render_jinja(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """Render with the tokenizer's own chat template (what training and serving use)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "the tokenizer has no chat template.\n  fix: train with data.template=alpaca, qa or a Jinja file "
            "(the run saves it as its chat template), or set tokenizer.chat_template"
        )
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as err:  # noqa: BLE001 - jinja raises anything (TemplateError, custom raise_exception)
        raise TemplateError(f"the chat template failed to render {[m['role'] for m in messages]}: {err}") from err


def _cut(text: str, sentinels: list[str]) -> list[str]:
    """Split ``text`` at each sentinel in order; ``len(result) == len(sentinels) + 1``."""
    pieces, rest = [], text
    for s in sentinels:
        if rest.count(s) != 1:
            raise TemplateError(f"the chat template does not render message content verbatim (sentinel {s!r})")
        head, rest = rest.split(s, 1)
        pieces.append(head)
    return pieces + [rest]


def _strip_suffix(text: str, suffix: str, what: str) -> str:
    if not text.endswith(suffix):
        raise TemplateError(f"the chat template is not a per-message concatenation ({what})")
    return text[: len(text) - len(suffix)]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise TemplateError(f"the chat template is not a per-message concatenation ({what})")
    return text[len(prefix) :]


def _msgs(*roles: str, n: int = 0) -> list[dict[str, str]]:
    return [{"role": r, "content": f"{_S[r]}{i + n}"} for i, r in enumerate(roles)]


def analyse_template(tokenizer) -> ChatLayout:
    """Derive the :class:`ChatLayout` of ``tokenizer.chat_template`` and check it on sample chats.

    Raises:
        TemplateError: the template renders something that is not a per-role concatenation.
    """
    conv = _msgs("system", "user", "assistant", "user", "assistant")
    g = _cut(render_jinja(tokenizer, conv, False), [m["content"] for m in conv])
    suffix_asst = g[5]
    prefix_user = _strip_prefix(g[3], suffix_asst, "assistant suffix")
    suffix_sys = _strip_suffix(g[1], prefix_user, "system suffix")
    ended_user = _msgs("system", "user")
    suffix_user = _cut(render_jinja(tokenizer, ended_user, False), [m["content"] for m in ended_user])[2]
    prefix_asst = _strip_prefix(g[2], suffix_user, "user suffix")
    with_gen = _cut(render_jinja(tokenizer, ended_user, True), [m["content"] for m in ended_user])[2]
    generation = _strip_prefix(with_gen, suffix_user, "generation prompt")
    bos = getattr(tokenizer, "bos_token", None) or ""
    # A BOS in front of every turn (ChatML whose BOS is <|im_start|>) is part of the role prefix;
    # a BOS only in front of the first (Llama 3's <|begin_of_text|>) is a header.
    header = bos if bos and g[0].startswith(bos) and not prefix_user.startswith(bos) else ""
    prefix_sys = g[0][len(header) :]
    no_sys = _msgs("user")
    c = _cut(render_jinja(tokenizer, no_sys, False), [no_sys[0]["content"]])
    default_system = _strip_suffix(_strip_prefix(c[0], header, "header"), prefix_user, "default system")
    layout = ChatLayout(
        header=header,
        default_system=default_system,
        prefix={"system": prefix_sys, "user": prefix_user, "assistant": prefix_asst},
        suffix={"system": suffix_sys, "user": suffix_user, "assistant": suffix_asst},
        generation_prompt=generation,
    )
    check_layout(tokenizer, layout)
    return layout


def sample_conversations() -> list[tuple[list[dict[str, str]], bool]]:
    """Conversations (and ``add_generation_prompt``) used to check a template and compare exports."""
    hello = [{"role": "user", "content": "Hello! What is 2 + 2?"}]
    return [
        (hello, True),
        ([{"role": "system", "content": "You are terse."}, *hello], True),
        (hello + [{"role": "assistant", "content": "4."}, {"role": "user", "content": "And 3 + 3?"}], True),
        ([{"role": "system", "content": "Be kind."}, *hello, {"role": "assistant", "content": "It is 4."}], False),
        (_msgs("user", "assistant", "user", "assistant", n=7), False),
    ]


def check_layout(tokenizer, layout: ChatLayout) -> None:
    """Raise :class:`TemplateError` unless ``layout`` renders every sample exactly like the Jinja template."""
    for messages, gen in sample_conversations():
        expected = render_jinja(tokenizer, messages, gen)
        got = layout.render(messages, gen)
        if got != expected:
            roles = [m["role"] for m in messages]
            raise TemplateError(
                f"the chat template is not a per-role concatenation of messages (differs on {roles}):\n"
                f"  jinja: {expected!r}\n  layout: {got!r}"
            )
