"""One base class for errors in what the user gave (a config, a flag, an input path, a model name), and the one
way every command reports them: a single ``error: ...`` line on stderr and exit status 2.

Anything else (a bug, a failed library call, an interrupted run) is not a :class:`UserError` and keeps its own
handling: a traceback, or a command's own exit status.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

USAGE_ERROR = 2
"""Exit status of a command whose user input cannot be used (argparse's own status for a bad flag)."""


class UserError(ValueError):
    """What the user gave cannot be used; the message says which thing, what was found and what to do.

    A ``ValueError``, so that ``except ValueError`` around a stage's API keeps catching it."""


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line, even where it quotes a library's multi-line error."""
    return re.sub(r"\s*\n\s*", " ", str(error).strip())


def report(error: BaseException) -> int:
    """Print ``error: <message>`` on one line to stderr and return :data:`USAGE_ERROR`."""
    print("error: " + one_line(error), file=sys.stderr)
    return USAGE_ERROR


def run_main(main: Callable[[], int | None], also: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's body and return its exit status: the body's own (None is 0), or, for a :class:`UserError`
    (or one of ``also``, a command's extra usage errors), :data:`USAGE_ERROR` after one ``error: ...`` line on
    stderr. Any other exception propagates, so the command's own handling of it stays as it is."""
    try:
        code = main()
    except (UserError, *also) as error:
        return report(error)
    return 0 if code is None else code
