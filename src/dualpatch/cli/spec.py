"""Command-line options derived from the run spec (``dualpatch.spec``).

A field ``coreset_ratio`` becomes ``--coreset-ratio`` with the field's default, help, range and
choices (an enum of its registry's names); its old flags (``--coreset``) stay accepted, hidden
from ``--help``, with one ``warning:`` line. ``spec_options(*names)`` gives a command those options
and hands their values to it as one ``spec.ExperimentSpec`` (a ``RunSpec``), the settings it does
not take at their defaults (``run``, whose options override a config, gets a dict of the given
ones). Every command that takes a
setting (``fit``, ``evaluate``, ``predict``, ``run``, ``demo``) declares it this way, so a name,
default, help text or choice is written once, in the spec (tests/cli/test_options_follow_spec.py).
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from dualpatch import spec

_ENUMS: dict[str, type[StrEnum]] = {}
#: a command parameter's default meaning "the spec's default"
_SPEC_DEFAULT = object()
#: the ``--help`` section of spec options: one for all, or one per field name
Panel = str | Callable[[str], str] | None


def choice_enum(name: str) -> type[StrEnum]:
    """The enum of field ``name``'s choices, read from its registry once."""
    if name not in _ENUMS:
        names = spec.SETTINGS[name].choices()  # type: ignore[misc]
        title = "".join(part.title() for part in name.split("_"))
        _ENUMS[name] = StrEnum(title, {n: n for n in names})
    return _ENUMS[name]


def _cli_type(name: str) -> Any:
    setting = spec.SETTINGS[name]
    if setting.choices:
        return choice_enum(name)
    hint = typing.get_type_hints(spec.ExperimentSpec)[name]
    listed = any(t is list or typing.get_origin(t) is list for t in (hint, *typing.get_args(hint)))
    if name == "image_size":
        return tuple[int, int]
    if setting.path:  # the config holds text; the option shows and checks a path
        return list[Path] if listed else Path | None
    if listed:  # seeds 0,1,2; train_items 1-33: one comma-separated word on the command line
        return str | None
    return hint


def _limits(setting: spec.Setting) -> dict[str, float]:
    return {k: v for k, v in (("min", setting.minimum), ("max", setting.maximum)) if v is not None}


def spec_default(name: str) -> Any:
    """Field ``name``'s default as its option holds it (a size as a tuple, as the spec does)."""
    return getattr(spec.ExperimentSpec(), name)


def spec_option(name: str, default: Any = _SPEC_DEFAULT, more: str = "", **overrides: Any) -> Any:
    """``typer.Option`` for field ``name``: its default (unless given; ``...``: required), help
    (``more`` appended: what the setting means to this command), range and flag."""
    setting = spec.SETTINGS[name]
    if default is _SPEC_DEFAULT:
        default = spec_default(name)
    if setting.choices and isinstance(default, str):
        default = choice_enum(name)(default)
    flag = spec.option_name(name)
    if isinstance(spec_default(name), bool):  # --reweight/--no-reweight, as typer names a bool
        flag = f"{flag}/--no-{flag[2:]}"
    text = f"{setting.help} {more}".strip()
    return typer.Option(default, flag, help=text, **_limits(setting), **overrides)


def _param(name: str, option: Any, annotation: Any) -> inspect.Parameter:
    kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(name, kind, default=option, annotation=annotation)


def _old(name: str, flag: str) -> inspect.Parameter:
    """The hidden parameter of an old flag: None unless given."""
    option = typer.Option(None, flag, hidden=True, **_limits(spec.SETTINGS[name]))
    return _param(_old_param(flag), option, _cli_type(name) | None)


def _old_param(flag: str) -> str:
    return "renamed_" + flag.lstrip("-").replace("-", "_")


def plain(value: Any) -> Any:
    """An option's value as the config holds it: enums as text, tuples as lists of numbers."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def _added(
    names: tuple[str, ...],
    given_only: bool,
    panel: Panel,
    required: tuple[str, ...],
    defaults: dict[str, Any],
    more: dict[str, str],
) -> list[inspect.Parameter]:
    """The parameters of the options of ``names`` and of their old flags."""
    added = []
    for name in names:
        default = ... if name in required else defaults.get(name, _SPEC_DEFAULT)
        kind = _cli_type(name)
        if given_only:  # None: not given, the config's value stands
            default, kind = None, kind | None
        section = panel(name) if callable(panel) else panel
        option = spec_option(name, default, more.get(name, ""), rich_help_panel=section)
        added.append(_param(name, option, kind))
        added += [_old(name, flag) for flag in spec.SETTINGS[name].flags]
    return added


def _collect(names: tuple[str, ...], kwargs: dict, given_only: bool) -> tuple[dict, dict]:
    """Pop the values of ``names`` (or of their old flags, with a warning) from ``kwargs``."""
    values, flags = {}, {}
    for name in names:
        value, flag = kwargs.pop(name), spec.option_name(name)
        for old in spec.SETTINGS[name].flags:
            given = kwargs.pop(_old_param(old))
            if given is not None:
                spec.renamed(old, spec.option_name(name), where="option")
                value, flag = given, old
        if not (given_only and value is None):
            values[name], flags[name] = plain(value), flag
    return values, flags


def spec_options(
    *names: str,
    required: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    more: dict[str, str] | None = None,
    given_only: bool = False,
    panel: Panel = None,
) -> Callable[[Callable], Callable]:
    """Give a command one option per spec field in ``names``, in place of its ``spec`` parameter.

    The command receives their values as ``spec``, an ``ExperimentSpec`` (a ``RunSpec``: fields it
    does not take at their defaults) and, as ``flags``, the option each value came from (the old
    one where the user typed it). ``required`` options
    have no default; ``defaults`` replace the spec's for this command; ``more`` adds a sentence to
    a field's help. ``given_only``: every option defaults to None (not given) and ``spec`` holds
    only the given ones, a dict (field name -> plain value: ``run``, where they override the
    config). ``panel``: their ``--help`` section
    (or a function of the field's name that gives it).
    """

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        params = list(signature.parameters.values())
        at = [p.name for p in params].index("spec")
        # keyword-only, all of them: typer passes keywords, and the options go in between
        keyword = inspect.Parameter.KEYWORD_ONLY
        kept = [p.replace(kind=keyword) for p in params if p.name not in ("spec", "flags")]
        added = _added(names, given_only, panel, required, defaults or {}, more or {})

        @functools.wraps(command)
        def with_spec(**kwargs: Any) -> Any:
            values, flags = _collect(names, kwargs, given_only)
            given = values if given_only else spec.ExperimentSpec.of(values)
            return command(**kwargs, spec=given, flags=flags)

        with_spec.__signature__ = signature.replace(parameters=kept[:at] + added + kept[at:])  # type: ignore[attr-defined]
        with_spec.__annotations__ = {
            **{k: v for k, v in command.__annotations__.items() if k not in ("spec", "flags")},
            **{p.name: p.annotation for p in added},
        }
        return with_spec

    return decorate


def as_overrides(values: dict[str, Any]) -> list[str]:
    """Option values as ``--set`` assignments (``key=value``, the value as YAML reads it): a
    comma-separated list (``--seeds 0,1,2``) becomes the list ``[0,1,2]``."""
    out = []
    for name, value in values.items():
        listed = isinstance(value, str) and spec.SETTINGS[name].listed
        out.append(f"{name}=[{value}]" if listed else f"{name}={json.dumps(value)}")
    return out


def size_hw(
    new: tuple[int, int], old_wh: tuple[int, int] | None, old_flag: str, flag: str = "--image-size"
) -> tuple[int, int]:
    """The size (H, W): ``new`` (``flag H W``), or the old ``old_flag W H`` converted, with one
    warning."""
    if old_wh is None:
        return (new[0], new[1])
    warnings.warn(
        f"option: {old_flag} W H is renamed {flag} H W (height first); "
        f"read as {flag} {old_wh[1]} {old_wh[0]}",
        FutureWarning,
        stacklevel=2,
    )
    return (old_wh[1], old_wh[0])
