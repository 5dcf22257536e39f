"""Allowed ranges of recipe settings, checked when a settings dataclass is built.

Each settings dataclass lists its rules in `__post_init__` (`check_ranges(self, {...})`). A value outside its
range raises `SettingError`, whose message names the setting and what it may be. A setting inside a section
names only itself there (`lr`); the recipe loader adds the section path (`optim.lr`) and the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

__all__ = ["Rule", "SettingError", "above", "at_least", "between", "check_ranges", "one_of", "pair_of"]


class SettingError(ValueError):
    """A setting whose value is out of its allowed range.

    Attributes:
        key: the setting's path in the recipe (`optim.lr`), as far as it is known where the error is raised.
        value: the refused value.
        allowed: what the setting may be (`a number > 0`).
        source: the recipe file, when known.
    """

    def __init__(self, key: str, value: Any, allowed: str, source: Optional[str] = None):
        self.key, self.value, self.allowed, self.source = key, value, allowed, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}={value!r} is not allowed: {key} must be {allowed}")

    def __reduce__(self):
        return (self.__class__, (self.key, self.value, self.allowed, self.source))

    def under(self, section: str) -> SettingError:
        """The same error for the setting inside `section` (`optim` + `lr` -> `optim.lr`)."""
        return SettingError(f"{section}.{self.key}", self.value, self.allowed, self.source)

    def in_file(self, source: str) -> SettingError:
        return SettingError(self.key, self.value, self.allowed, source)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Rule:
    """What one setting may be: `test(value)` holds, described as `allowed`; `None` passes when `nullable`."""

    test: Callable[[Any], bool]
    allowed: str
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False

    def or_null(self, meaning: str = "") -> Rule:
        return Rule(self.test, f"{self.allowed} or null{f' ({meaning})' if meaning else ''}", nullable=True)

    def or_value(self, choice: str, meaning: str = "") -> Rule:
        """This rule, or exactly the word `choice` (`num_threads: auto`)."""
        test = self.test
        return Rule(
            lambda v: v == choice or test(v),
            f"{self.allowed} or {choice!r}{f' ({meaning})' if meaning else ''}",
            self.nullable,
        )


def at_least(low: float, integer: bool = False) -> Rule:
    kind = "an integer" if integer else "a number"
    return Rule(lambda v: _is_number(v) and (not integer or isinstance(v, int)) and v >= low, f"{kind} >= {low}")


def above(low: float) -> Rule:
    return Rule(lambda v: _is_number(v) and v > low, f"a number > {low}")


def between(low: float, high: float, high_open: bool = False) -> Rule:
    close = ")" if high_open else "]"
    return Rule(
        lambda v: _is_number(v) and low <= v and (v < high if high_open else v <= high), f"in [{low}, {high}{close}"
    )


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def pair_of(rule: Rule) -> Rule:
    """Two values, each allowed by `rule`."""
    return Rule(
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2 and all(map(rule.accepts, v)),
        f"a pair [a, b] with each {rule.allowed}",
    )


def check_ranges(settings: Any, rules: Mapping[str, Rule]) -> None:
    """Raise `SettingError` for the first attribute of `settings` that its rule refuses."""
    for name, rule in rules.items():
        value = getattr(settings, name)
        if not rule.accepts(value):
            raise SettingError(name, value, rule.allowed)
