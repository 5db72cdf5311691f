"""Curate a text corpus with Ray Data.

Usage::

    python -m curation run --input data/raw/*.jsonl --output out/curated
    python -m curation run --config configs/curation/demo.yaml
    python -m curation run --input customer_logs.csv --output out/logs --languages en,de --format jsonl
    python -m curation run --input hf://wikimedia/wikipedia --hf-config 20231101.en --hf-streaming ...
    RAY_ADDRESS=auto python -m curation run ...            # on a cluster (or --ray-address auto)
    ray job submit --working-dir . -- python -m curation run --input s3://... --output ...

Flags override the YAML config; ``--print-config`` shows the resolved configuration and exits.
Exit codes: 0 done, 2 bad input, configuration or output folder (nothing was processed), 1 failure during
the run: the work finished so far is kept, and ``--resume`` goes on from there.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import typing
from typing import Any, Literal

import yaml

from common.errors import UserError, run_main
from curation.config import RunConfig, build_config, to_dict
from curation.steps.registry import Flag, StepSpec


class Interrupted(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so the run stops the same way."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _flag_dest(spec: StepSpec, flag: Flag) -> str:
    return f"{spec.name}__{flag.key}"


def _flag_kind(spec: StepSpec, flag: Flag) -> dict[str, Any]:
    """argparse arguments for a step's flag, from the annotation of the config field it sets."""
    tp = typing.get_type_hints(spec.config)[flag.key]
    if typing.get_origin(tp) is Literal:
        return {"choices": list(typing.get_args(tp))}
    if tp is bool:
        return {"action": "store_true", "default": None}
    kind = _csv if typing.get_origin(tp) is tuple else tp if tp in (int, float) else str
    return {"type": kind, "metavar": flag.key.upper()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m curation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    # flags default to None (= "not given", so the YAML's value stands); the help names the real defaults
    r = sub.add_parser("run", help="run the curation pipeline")
    r.add_argument("--config", help="YAML config (every key of RunConfig; see configs/curation/)")
    r.add_argument("--input", action="append", help="file, directory, glob or hf://DATASET; repeatable")
    r.add_argument("--output", help="output directory")
    r.add_argument("--text-column", help="column with the document text (default: text)")
    r.add_argument("--format", choices=["parquet", "jsonl"], help="output format (default: parquet)")
    r.add_argument("--steps", type=_csv,
                   help=f"comma-separated subset of {','.join(s.name for s in RunConfig.step_specs)}")
    r.add_argument("--ray-address", help="Ray cluster address (auto, ray://host:10001); default: RAY_ADDRESS or local")
    r.add_argument("--num-cpus", type=int, help="CPUs for the embedded local Ray")
    r.add_argument("--write-dropped", action="store_true", default=None, help="also write ids of dropped rows")
    r.add_argument("--text-mode", choices=["file", "line"], help="plain text: a document per file or per line")
    r.add_argument("--hf-config", help="Hugging Face dataset config name")
    r.add_argument("--hf-split", help="Hugging Face split (default: train)")
    r.add_argument("--hf-streaming", action="store_true", default=None, help="stream the HF dataset")
    r.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an earlier run in --output (only the files it wrote are removed)")
    r.add_argument("--resume", action="store_true", default=None,
                   help="finish an interrupted run in --output, redoing only unfinished work (same config)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    options = r.add_argument_group("step options", "the most used ones; the config's step sections hold them all")
    for spec in RunConfig.step_specs:  # each step declares its flags in curation/steps/registry.py
        for flag in spec.flags:
            options.add_argument(flag.flag, dest=_flag_dest(spec, flag), help=flag.help, **_flag_kind(spec, flag))
    return p


def overrides_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as a nested dict shaped like the YAML config (None = not given)."""
    steps = {spec.name: {flag.key: getattr(a, _flag_dest(spec, flag)) for flag in spec.flags}
             for spec in RunConfig.step_specs if spec.flags}
    return {
        "input": a.input,
        "output": a.output,
        "text_column": a.text_column,
        "steps": a.steps,
        "ray_address": a.ray_address,
        "num_cpus": a.num_cpus,
        "overwrite": a.overwrite,
        "resume": a.resume,
        "progress": False if a.no_progress else None,
        "writer": {"format": a.format, "write_dropped": a.write_dropped},
        "reader": {"text_mode": a.text_mode, "hf_config": a.hf_config, "hf_split": a.hf_split,
                   "hf_streaming": a.hf_streaming},
        **steps,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a config, input or output the run cannot use, one line on
    stderr; 130 or 143 when interrupted; 1 when the run failed)."""
    return run_main(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = build_config(args.config, overrides_from_args(args))
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
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
