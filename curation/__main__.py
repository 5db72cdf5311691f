"""Curate a text corpus with Ray (one Ray task per read task, key partition and output shard).

Usage::

    python -m curation run --input data/raw/*.jsonl --output out/curated
    python -m curation run --config configs/curation/demo.yaml
    python -m curation run --config configs/curation/demo.yaml --quality.min_chars 20 --print_config
    python -m curation run --input customer_logs.csv --output out/logs --languages en,de --writer.format jsonl
    python -m curation run --input hf://wikimedia/wikipedia --reader.hf_config 20231101.en --reader.hf_streaming
    RAY_ADDRESS=auto python -m curation run ...            # on a cluster (or --ray_address auto)
    ray job submit --working-dir . -- python -m curation run --input s3://... --output ...

Every key of the YAML config is a flag (``--dedup.key normalized``, ``--language.languages [en,de]``); flags override
the YAML; ``--print_config`` prints the resolved configuration and exits.
Exit codes: 0 done, 2 bad input, configuration or output folder (nothing was processed), 1 failure during
the run: the work finished so far is kept, and ``--resume`` goes on from there.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from common.cli import CliError, Command, config_yaml, parse
from common.errors import UserError, run_main
from common.ray_runtime import shutdown_ray
from curation.config import RunConfig, RunOptions, build_config


class Interrupted(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so the run stops the same way."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


FIXED_ALIASES: dict[str, str] = {
    "--format": "writer.format",
    "--write-dropped": "writer.write_dropped",
    "--text-mode": "reader.text_mode",
    "--hf-config": "reader.hf_config",
    "--hf-split": "reader.hf_split",
    "--hf-streaming": "reader.hf_streaming",
}
"""Short flags of the reader's and writer's most used options (each also has its dotted flag)."""


def command(config_cls: type[RunOptions] = RunConfig) -> Command:
    """The command line of a run config class: its keys as dotted flags, plus the short flags, those above and
    the ones each step declares in its registry entry (``--languages`` for ``--language.languages``)."""
    steps = {flag.flag: f"{spec.name}.{flag.key}" for spec in config_cls.step_specs for flag in spec.flags}
    return Command(prog="python -m curation run", description=__doc__, config=config_cls,
                   aliases={**FIXED_ALIASES, **steps}, required=("input", "output"), build=lambda data: build_config(None, data, config_cls))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a config, input or output the run cannot use, one line on
    stderr; 130 or 143 when interrupted; 1 when the run failed)."""
    return run_main(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":  # the one subcommand; ``python -m curation --config X`` runs too
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):
        raise CliError(f"unknown command {argv[0]!r}: the command is `python -m curation run --config FILE ...`")
    parsed = parse(command(), argv)
    if parsed.print_config:
        print(config_yaml(parsed.config, parsed.missing), end="")
        return 0
    cfg = parsed.config
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return _run(cfg)
    finally:
        # the Ray this run started, stopped now instead of in Ray's exit hook: ~1.5 s less between the summary
        # and the prompt on the demo run (see common.ray_runtime.shutdown_ray); nothing is left running
        shutdown_ray()


def _run(cfg: RunConfig) -> int:
    from curation.pipeline import run  # imports Ray; kept out of --help and config errors
    from curation.report import summary_lines

    previous = signal.getsignal(signal.SIGTERM)
    try:
        # docker stop, kill, a scheduler's SIGTERM: stop like Ctrl-C. Installed once Ray runs, because ray.init
        # installs a handler of its own that would exit with a core dump message and no word from us.
        report = run(cfg, on_ray_started=lambda: signal.signal(signal.SIGTERM, _raise_interrupted))
    except UserError:
        raise  # one line, exit 2 (run_main)
    except (KeyboardInterrupt, Interrupted) as e:
        code = 143 if isinstance(e, Interrupted) else 130
        print(f"\ninterrupted ({'SIGTERM' if code == 143 else 'SIGINT'}): {cfg.output} is not marked finished (no "
              f"_SUCCESS); the read tasks and shards it completed are kept: rerun the same command with --resume.",
              file=sys.stderr)
        return code
    except Exception:
        logging.getLogger("curation").exception("curation run failed")
        print(f"error: the run failed (see above). {cfg.output} is not marked finished (no _SUCCESS); the read "
              f"tasks and shards it completed are kept: fix the cause and rerun the same command with --resume.",
              file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("\n".join(["", "Curation finished:", *("  " + line for line in summary_lines(report)),
                     f"  output: {cfg.output}  (data/, report.json, report.md; _SUCCESS marks it finished)"]))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
