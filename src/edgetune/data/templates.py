"""Prompt templates.

A template is a string with ``{text}``, optionally ``{text_b}`` or any other example field, and exactly
one ``{mask}``: where the label word goes. For a causal LM the label word is predicted right after the
prompt, so ``{mask}`` must come last (``"{text} In summary, it was {mask}"``); masked LMs and seq2seq
models accept it anywhere.

Rendering returns the prompt in *parts* that say which pieces are user text (truncatable) and which are
template (kept whole), so a backend can truncate an over-long input without cutting the template.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from ..errors import DataError
from .example import Example

MASK = "mask"


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: ``before`` the mask and ``after`` it, each a tuple of ``(piece, is_input)``."""

    before: tuple[tuple[str, bool], ...]
    after: tuple[tuple[str, bool], ...] = ()

    @property
    def text_before(self) -> str:
        return "".join(p for p, _ in self.before)

    @property
    def text_after(self) -> str:
        return "".join(p for p, _ in self.after)

    def key(self) -> str:
        """Exact text identity of the prompt (used in cache keys)."""
        return self.text_before + "\x00{mask}\x00" + self.text_after


@dataclass(frozen=True)
class Template:
    """A prompt template; see the module docstring for the syntax."""

    text: str

    def __post_init__(self) -> None:
        fields = self.fields
        if fields.count(MASK) != 1:
            raise DataError(f"template {self.text!r} must contain {{mask}} exactly once")
        if not any(f != MASK for f in fields):
            raise DataError(f"template {self.text!r} names no input field such as {{text}}")

    @property
    def fields(self) -> list[str]:
        try:
            parsed = list(string.Formatter().parse(self.text))
        except ValueError as exc:
            raise DataError(f"template {self.text!r} is malformed: {exc}") from None
        return [name for _, name, _, _ in parsed if name is not None]

    @property
    def mask_is_last(self) -> bool:
        return self.text.rstrip().endswith("{" + MASK + "}")

    def render(self, example: Example) -> Prompt:
        before: list[tuple[str, bool]] = []
        after: list[tuple[str, bool]] = []
        target = before
        for literal, name, _, _ in string.Formatter().parse(self.text):
            if literal:
                target.append((literal, False))
            if name is None:
                continue
            if name == MASK:
                target = after
                continue
            try:
                value = example.field(name)
            except KeyError:
                have = ", ".join("{" + f + "}" for f in ("text", "text_b", *example.extra)
                                 if f != "text_b" or example.text_b is not None)
                raise DataError(f"template {self.text!r} names {{{name}}}, which example {example.id!r} does not "
                                f"have (its fields: {have})") from None
            if value is None:
                value = ""
            target.append((str(value), True))
        # The label word is scored with its own leading space (" great"), so the text before the mask
        # ends without one.
        if before:
            last, is_input = before[-1]
            before[-1] = (re.sub(r"\s+$", "", last), is_input)
        return Prompt(tuple(p for p in before if p[0]), tuple(p for p in after if p[0]))
