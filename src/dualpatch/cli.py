"""Command line: a thin shell over the library API (``dualpatch --help``).

This module holds the top-level ``app``, its one error path (``main``) and the registration of
the command modules: ``cli_fit`` (fit, evaluate, predict), ``cli_run`` (run, demo), ``cli_data``,
``cli_augment`` and ``cli_serve`` (export, serve). Shared option types live in ``cli_common``.
"""

from __future__ import annotations

import sys
import warnings

import typer

from .cli_common import Rule  # noqa: F401  (kept for callers of cli.Rule)
from .errors import DualpatchError

app = typer.Typer(
    help="PatchCore-style surface-defect detection with single and dual memory banks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _warning_line(message, category, filename, lineno, file=None, line=None):
    # Warnings are user-facing messages here: one line, no source location.
    (file or sys.stderr).write(f"warning: {message}\n")


def main() -> None:
    """Entry point: dualpatch errors become one line on stderr and exit status 1."""
    warnings.showwarning = _warning_line
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer's answer to Ctrl-C inside a command
            typer.echo("aborted: nothing was replaced", err=True)
        if isinstance(code, int) and code:
            sys.exit(code)
    except DualpatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted: nothing was replaced", err=True)
        sys.exit(130)
    except OSError as exc:  # an output that cannot be written, a folder that is a file, ...
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        # usage errors (typer vendors its own click) carry their own message and exit code
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "format_message"):
                exc.show()
            else:  # one line, like every other error
                ctx = getattr(exc, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                message = " ".join(exc.format_message().split())
                typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        raise


def _register_subcommands() -> None:
    # An ImportError here is a bug in dualpatch itself: let it surface rather than hide a command.
    import importlib

    # name None: the module's commands join the top level (fit, evaluate, predict, run, demo, ...)
    for module, name in (
        ("cli_fit", None),
        ("cli_run", None),
        ("cli_data", "data"),
        ("cli_augment", "augment"),
        ("cli_serve", None),
    ):
        app.add_typer(importlib.import_module(f"dualpatch.{module}").app, name=name)


_register_subcommands()

if __name__ == "__main__":
    main()
