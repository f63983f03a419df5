"""How one setting of the run spec is checked, described and offered (``dualpatch.spec``).

A ``Setting`` rides in a dataclass field's metadata; the helpers below make the common kinds of
field (a choice from a registry, a fraction, a whole number, a seed, a flag) with their checks,
their one-line "expected ..." text and the range of their command-line option.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dualpatch.defaults import MAX_SEED, MIN_SIDE


def whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def memory_size(v: Any) -> bool:
    from dualpatch.bank.spill import memory_size_ok

    return v is None or memory_size_ok(v)


@dataclass(frozen=True)
class Setting:
    """How one field is checked, described and offered on the command line."""

    expected: str = ""  # what a valid value is: "config: <key> is <value>; expected <this>"
    valid: Callable[[Any], bool] = lambda v: True
    help: str = ""
    choices: Callable[[], Sequence[str]] | None = None  # a registry's names
    minimum: float | None = None  # the CLI option's range (the config checks ``valid``)
    maximum: float | None = None
    aliases: tuple[str, ...] = ()  # old YAML / --set keys, accepted with a warning
    flags: tuple[str, ...] = ()  # old CLI options, accepted with a warning
    scope: str = "shared"  # shared: top level and per run; run: per run only; top: top level only
    cli: bool = True  # offered as an option by the commands that take this group of settings
    path: bool = False  # a file or folder (one, or a list): a path option on the command line
    listed: bool = False  # a list given on the command line as one comma-separated word: 0,1,2

    def expect(self) -> str:
        return "one of " + ", ".join(self.choices()) if self.choices else self.expected

    def ok(self, value: Any) -> bool:
        return value in self.choices() if self.choices else self.valid(value)


def option_name(name: str) -> str:
    """The CLI option of field ``name``: ``coreset_ratio`` -> ``--coreset-ratio``."""
    return "--" + name.replace("_", "-")


def entry(default: Any, setting: Setting) -> Any:
    """A dataclass field with ``default`` (copied per instance if mutable) and ``setting``."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"s": setting})
    return field(default=default, metadata={"s": setting})


def choice(default: str, registry: Callable[[], Sequence[str]], help: str, **kw: Any) -> Any:
    return entry(default, Setting(choices=registry, help=help, **kw))


def fraction(default: float, help: str, **kw: Any) -> Any:
    ok = lambda v: number(v) and 0 <= v <= 1  # noqa: E731
    return entry(default, Setting("a fraction from 0 to 1", ok, help, None, 0.0, 1.0, **kw))


def at_least_1(default: int, help: str, **kw: Any) -> Any:
    ok = lambda v: whole(v) and v >= 1  # noqa: E731
    return entry(default, Setting("a whole number of at least 1", ok, help, None, 1, None, **kw))


def seed(default: int, help: str, **kw: Any) -> Any:
    ok = lambda v: whole(v) and 0 <= v <= MAX_SEED  # noqa: E731
    expected = f"a whole number 0 to {MAX_SEED}"
    return entry(default, Setting(expected, ok, help, None, 0, MAX_SEED, **kw))


def flag(default: bool, help: str, **kw: Any) -> Any:
    return entry(default, Setting("true or false", lambda v: isinstance(v, bool), help, **kw))


def size_ok(v: Any) -> bool:
    return (
        isinstance(v, list | tuple) and len(v) == 2 and all(whole(x) and x >= MIN_SIDE for x in v)
    )


def paths(v: Any) -> bool:
    return isinstance(v, list) and all(text(x) for x in v)


def items_ok(v: Any) -> bool:
    return v is None or (isinstance(v, list) and all(whole(x) and 1 <= x <= 999 for x in v))


def seeds_ok(v: Any) -> bool:
    return v is None or (
        isinstance(v, list)
        and bool(v)
        and all(whole(x) and 0 <= x <= MAX_SEED for x in v)
        and len(set(v)) == len(v)  # a repeated seed would count twice and narrow the intervals
    )
