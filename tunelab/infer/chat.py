"""A multi-turn chat session over an :class:`Engine` (what ``tunelab chat`` drives).

The whole conversation is re-rendered with the chat template each turn; the context cache
makes that cheap: the previous turn's prompt + answer is the longest cached prefix of the
next prompt, so only the new user message is prefilled (``Timings.cached_prompt_tokens``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tunelab.infer.decode import GenerationStream
from tunelab.infer.engine import ChatMessage, Engine
from tunelab.infer.types import SamplingParams


@dataclass
class ChatSession:
    """Conversation state: an optional system prompt and the alternating turns."""

    engine: Engine
    model_id: str
    params: SamplingParams = field(default_factory=SamplingParams)
    system: str | None = None
    turns: list[ChatMessage] = field(default_factory=list)

    def messages(self) -> list[ChatMessage]:
        head = [ChatMessage("system", self.system)] if self.system else []
        return head + self.turns

    def send(self, text: str) -> GenerationStream:
        """Ask ``text``; iterate the stream for the answer. The answer joins the history when done."""
        self.turns.append(ChatMessage("user", text))
        prompt = self.engine.encode_chat(self.messages())
        stream = self.engine.stream(self.model_id, prompt, self.params)
        turns = self.turns
        outer = GenerationStream(iter(()))

        def deltas():
            try:
                yield from stream
            finally:
                outer.result = stream.result
                if stream.result is not None:
                    turns.append(ChatMessage("assistant", stream.result.text))

        outer._deltas = deltas()
        return outer

    def reset(self) -> None:
        """Forget the turns (the system prompt stays)."""
        self.turns = []

    def set_system(self, text: str | None) -> None:
        self.system = text or None
        self.reset()


@dataclass(frozen=True)
class CommandOutcome:
    message: str
    quit: bool = False


def _reset(session: ChatSession, arg: str) -> CommandOutcome:
    session.reset()
    return CommandOutcome("history cleared")


def _system(session: ChatSession, arg: str) -> CommandOutcome:
    session.set_system(arg.strip() or None)
    return CommandOutcome(f"system prompt {'set' if arg.strip() else 'removed'}; history cleared")


def _quit(session: ChatSession, arg: str) -> CommandOutcome:
    return CommandOutcome("bye", quit=True)


def _help(session: ChatSession, arg: str) -> CommandOutcome:
    return CommandOutcome("commands: " + ", ".join(f"/{name}" for name in COMMANDS))


#: Slash commands of the chat REPL.
COMMANDS: dict[str, Callable[[ChatSession, str], CommandOutcome]] = {
    "reset": _reset,
    "system": _system,
    "exit": _quit,
    "quit": _quit,
    "help": _help,
}


def run_command(session: ChatSession, line: str) -> CommandOutcome | None:
    """Run ``/name arg`` if ``line`` is a command; None when it is a normal message."""
    if not line.startswith("/"):
        return None
    name, _, arg = line[1:].partition(" ")
    if name not in COMMANDS:
        return CommandOutcome(f"unknown command /{name}; " + _help(session, "").message)
    return COMMANDS[name](session, arg)
