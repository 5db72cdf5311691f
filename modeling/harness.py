r"""lm-evaluation-harness for the project's models: write domain tasks from held-out documents, run tasks.

Usage::

    # a last-word cloze and a "which continuation is real" task from the curated held-out split
    python -m modeling.harness tasks --data out/demo/curated --output out/demo/tasks
    # run them (and/or standard tasks where the hub is reachable) on any model form
    python -m modeling.harness run --model runs/tiny-cpu/version_0/hf --tasks domain \
        --include_path out/demo/tasks --output out/demo/harness.json
    lm_eval --model hf --model_args pretrained=runs/tiny-cpu/version_0/hf --tasks domain \
        --include_path out/demo/tasks                     # the same tasks with lm-eval's own command

``tasks`` takes the keys of :class:`~modeling.evaluation.domain_tasks.DomainTasksConfig`, ``run`` those of
:class:`~modeling.evaluation.harness.HarnessConfig`, as flags or in a ``--config`` YAML. ``python -m
modeling.evaluate --harness_tasks ...`` runs harness tasks next to perplexity and bits per byte on one loaded
model. Details: docs/evaluation.md.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from common.cli import CliError, Command, run_command
from common.errors import run_main
from modeling.evaluation.domain_tasks import DomainTasksConfig, write_domain_tasks
from modeling.evaluation.harness import HarnessConfig, ResultRow, markdown_table, run_harness

TASKS = Command(prog="python -m modeling.harness tasks", description=__doc__, config=DomainTasksConfig)
RUN = Command(prog="python -m modeling.harness run", description=__doc__, config=HarnessConfig)
SUBCOMMANDS = {"tasks": TASKS, "run": RUN}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a usage error, with one line on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)

    def write(cfg: DomainTasksConfig, _: object) -> None:
        result = write_domain_tasks(cfg)
        print(json.dumps({"folder": str(result.folder), "tasks": result.task_names, "items": result.items,
                          "docs": result.docs}, indent=2))

    def run(cfg: HarnessConfig, _: object) -> None:
        report = run_harness(cfg)
        print(markdown_table([ResultRow(**row) for row in report["results"]]), end="")

    def body() -> int:
        if not args or args[0] not in SUBCOMMANDS:
            raise CliError("name a subcommand: `python -m modeling.harness tasks ...` (write domain tasks) or "
                           "`python -m modeling.harness run ...` (run tasks on a model); --help after either")
        command = SUBCOMMANDS[args[0]]
        return run_command(command, args[1:], write if command is TASKS else run)

    return run_main(body)


__all__ = ["RUN", "TASKS", "main"]

if __name__ == "__main__":
    sys.exit(main())
