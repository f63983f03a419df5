"""Command-line options derived from the run spec (``dualpatch.spec``).

A field ``coreset_ratio`` becomes ``--coreset-ratio`` with the field's default, help, range and
choices (an enum of its registry's names); its old flags (``--coreset``) stay accepted, hidden
from ``--help``, with one ``warning:`` line. ``spec_options(*names)`` gives a command those options
and hands their values to it as one ``spec`` dict keyed by field name.
"""

from __future__ import annotations

import functools
import inspect
import typing
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from . import spec

_ENUMS: dict[str, type[StrEnum]] = {}


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
    if name == "image_size":
        return tuple[int, int]
    if setting.path:  # the config holds text; the option shows and checks a path
        return list[Path] if typing.get_origin(hint) is list else Path | None
    return hint


def spec_option(name: str, default: Any = None, *flags: str, **overrides: Any) -> Any:
    """``typer.Option`` for field ``name``: its default (unless given), help, range, flag."""
    setting = spec.SETTINGS[name]
    if default is None:
        default = getattr(spec.ExperimentSpec(), name)
        default = tuple(default) if name == "image_size" else default
    if setting.choices and isinstance(default, str):
        default = choice_enum(name)(default)
    limits = {"min": setting.minimum, "max": setting.maximum}
    flag = spec.option_name(name)
    if isinstance(default, bool):  # --reweight/--no-reweight, as typer names a plain bool
        flag = f"{flag}/--no-{flag[2:]}"
    return typer.Option(
        default,
        *(flags or [flag]),
        help=setting.help,
        **{k: v for k, v in limits.items() if v is not None},
        **overrides,
    )


def _old(name: str, flag: str) -> inspect.Parameter:
    """The hidden parameter of an old flag: None unless given."""
    setting = spec.SETTINGS[name]
    limits = {"min": setting.minimum, "max": setting.maximum}
    option = typer.Option(
        None, flag, hidden=True, **{k: v for k, v in limits.items() if v is not None}
    )
    return inspect.Parameter(
        _old_param(flag), inspect.Parameter.KEYWORD_ONLY, default=option,
        annotation=_cli_type(name) | None,
    )  # fmt: skip


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


def spec_options(*names: str, **defaults: Any) -> Callable[[Callable], Callable]:
    """Give a command one option per spec field in ``names`` (``defaults`` override a field's
    default); the command receives their values as ``spec`` (field name -> plain value) and, as
    ``flags``, the option each value came from (the old one where the user typed it)."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        kept = [p for p in signature.parameters.values() if p.name not in ("spec", "flags")]
        added = []
        for name in names:
            option = spec_option(name, defaults.get(name))
            kind = inspect.Parameter.KEYWORD_ONLY
            added.append(inspect.Parameter(name, kind, default=option, annotation=_cli_type(name)))
            added += [_old(name, flag) for flag in spec.SETTINGS[name].flags]

        @functools.wraps(command)
        def with_spec(**kwargs: Any) -> Any:
            values, flags = {}, {}
            for name in names:
                values[name], flags[name] = kwargs.pop(name), spec.option_name(name)
                for old in spec.SETTINGS[name].flags:
                    given = kwargs.pop(_old_param(old))
                    if given is not None:
                        spec.renamed(old, spec.option_name(name), where="option")
                        values[name], flags[name] = given, old
                values[name] = plain(values[name])
            return command(**kwargs, spec=values, flags=flags)

        with_spec.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
        with_spec.__annotations__ = {
            **{k: v for k, v in command.__annotations__.items() if k not in ("spec", "flags")},
            **{p.name: p.annotation for p in added},
        }
        return with_spec

    return decorate


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
