"""How our commands (`mer`, `lightning`, the runner's and the sweep's worker processes) end, light
enough for `mer --help` (no torch): user errors as one line and exit code 2, Ctrl-C as exit code 130
with how to resume."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from jsonargparse import ArgumentError

from datamodules.errors import MERError

_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Given value type:", "Given value:",
          "Expected a <class 'NoneType'>")


def one_line(err: BaseException) -> str:
    """jsonargparse nests its messages over many lines; keep the informative ones on one line."""
    lines = [line.strip().lstrip("- ") for line in str(err).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(_NOISE)]
    return " ".join(kept or lines[:1]) or type(err).__name__


def user_error(err: BaseException | None) -> MERError | None:
    """The MERError behind `err`, also when a library re-raised it wrapped (class instantiation)."""
    while err is not None:
        if isinstance(err, MERError):
            return err
        err = err.__cause__ or err.__context__
    return None


def guarded(main: Callable[[], Any], resume: str = "rerun the same command to resume") -> None:
    """Run `main`; user errors become one line on stderr and exit code 2, Ctrl-C exit code 130 with
    `resume` (what was kept and how to go on)."""
    try:
        main()
    except KeyboardInterrupt:
        interrupted(resume)
    except SystemExit as exit_:
        if exit_.code != 130 and isinstance(exit_.__context__, KeyboardInterrupt):  # Lightning: Ctrl-C -> exit(1)
            interrupted(resume)
        raise
    except Exception as err:
        mer_error = user_error(err)
        if mer_error is None and not isinstance(err, ArgumentError):
            raise
        print(f"error: {mer_error or one_line(err) + ' (see --help)'}", file=sys.stderr)
        sys.exit(2)


def interrupted(resume: str) -> None:
    print(f"interrupted: {resume}", file=sys.stderr)
    sys.exit(130)
