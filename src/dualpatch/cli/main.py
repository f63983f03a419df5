"""Command line: a thin shell over the library API (``dualpatch --help``).

This module holds the top-level ``app``, its entry points (``main``, and ``console`` for the
console script) and the registration of the command modules: ``fit`` (fit, evaluate, predict),
``run`` (run, demo), ``data``, ``augment``, ``serve`` (export, serve) and ``model``. Shared option
types live in ``common``.
"""

from __future__ import annotations

import sys
import warnings

import typer

from dualpatch.cli.common import command_group, report_problem, show_warning

app = command_group(
    help="PatchCore-style surface-defect detection with single and dual memory banks."
)


def main() -> None:
    """Entry point. A problem inside a command becomes one ``error:`` line and its exit status
    in ``cli_common.report_problem`` (the one error path); here: what happens before a command
    runs (a usage error at the top level) and Ctrl-C."""
    warnings.showwarning = show_warning
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer's answer to Ctrl-C inside a command
            typer.echo("aborted: nothing was replaced", err=True)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted: nothing was replaced", err=True)
        sys.exit(130)
    except Exception as exc:
        code = report_problem(exc)
        if code is None:
            raise
        sys.exit(code)


def console() -> None:
    """The console script and ``python -m dualpatch.cli``: ``main``, then, when the command
    succeeded, the Python exit handlers and an exit that skips the native libraries' teardown.
    That teardown (torch's CUDA-built libraries, loaded even on a CPU) touched about 120 MiB that
    the command never used, the whole of evaluate's peak RSS above half of anomalib's (measured:
    benchmarks/evaluate_rss.py). Everything is written by then: outputs are swapped in whole
    (``fileio``) and the streams are flushed here. A failure exits the usual way."""
    import atexit
    import os
    import threading

    from dualpatch.cli.common import closed_pipe

    main()
    # what a normal exit does, in its order: threading's own shutdown (its exit callbacks, which
    # stop idle thread pools, then a wait for the threads that are not daemons: a writer still
    # saving), then the exit handlers (temporary folders, Ray, logging)
    threading._shutdown()
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader went away (``dualpatch ... | head``)
        os._exit(closed_pipe())
    os._exit(0)


def _register_subcommands() -> None:
    # An ImportError here is a bug in dualpatch itself: let it surface rather than hide a command.
    import importlib

    # name None: the module's commands join the top level (fit, evaluate, predict, run, demo, ...)
    for module, name in (
        ("fit", None),
        ("run", None),
        ("data", "data"),
        ("augment", "augment"),
        ("serve", None),
        ("model", "model"),
    ):
        app.add_typer(importlib.import_module(f"dualpatch.cli.{module}").app, name=name)


_register_subcommands()

if __name__ == "__main__":
    main()
