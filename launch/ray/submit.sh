#!/usr/bin/env bash
# Run curation as a job on a Ray cluster (the head's dashboard, port 8265, serves the Jobs API).
#
#   INPUT=/shared/raw OUTPUT=/shared/curated launch/ray/submit.sh [EXTRA curation run ARGS...]
#   RAY_JOB_ADDRESS=http://10.0.0.1:8265 INPUT='/shared/raw/*.jsonl.gz' OUTPUT=/shared/curated \
#       launch/ray/submit.sh --languages en,de --write-dropped
#
# Run it from the repository root: the repository is uploaded as the job's working directory (Ray leaves out
# what .gitignore and launch/ray/runtime_env.yaml exclude), so the cluster runs the code you have checked out.
# INPUT and OUTPUT must be paths every node sees (NFS, a mounted bucket). The job's driver attaches to the
# cluster through the RAY_ADDRESS that Ray sets for it; `ray job logs|status|stop JOB_ID` follow it later.
#
# Knobs (environment variables, defaults in brackets):
#   INPUT            input files, directories or globs (required)
#   OUTPUT           output directory (required)
#   CONFIG           curation config [configs/curation/cluster.yaml]
#   RAY_JOB_ADDRESS  the head's dashboard URL [http://127.0.0.1:8265]
#   RUNTIME_ENV      runtime environment YAML [launch/ray/runtime_env.yaml]
#   NO_WAIT          1: return once the job is submitted instead of following its logs [0]
#   RAY              the ray command [ray]
# Extra arguments go to `python -m curation run` after these, so they override the config.
# A job that died or was stopped (`ray job stop`) leaves OUTPUT without _SUCCESS: submit it again with the same
# settings plus --resume, and only the unfinished read tasks and shards are done.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

INPUT="${INPUT:-}"
OUTPUT="${OUTPUT:-}"
CONFIG="${CONFIG:-configs/curation/cluster.yaml}"
RAY_JOB_ADDRESS="${RAY_JOB_ADDRESS:-http://127.0.0.1:8265}"
RUNTIME_ENV="${RUNTIME_ENV:-launch/ray/runtime_env.yaml}"
NO_WAIT="${NO_WAIT:-0}"
RAY="${RAY:-ray}"

if [[ -z "$INPUT" || -z "$OUTPUT" ]]; then
  echo "error: set INPUT and OUTPUT (paths every node of the cluster sees); see launch/ray/submit.sh --help" >&2
  exit 2
fi
for f in "$CONFIG" "$RUNTIME_ENV"; do
  if [[ ! -f "$f" ]]; then
    echo "error: $f not found; run from the repository root or set CONFIG / RUNTIME_ENV" >&2
    exit 2
  fi
done

wait_flag=()
if [[ "$NO_WAIT" == 1 ]]; then wait_flag=(--no-wait); fi

set -x
exec "$RAY" job submit --address "$RAY_JOB_ADDRESS" --working-dir . --runtime-env "$RUNTIME_ENV" \
  "${wait_flag[@]}" -- \
  python -m curation run --config "$CONFIG" --input "$INPUT" --output "$OUTPUT" --no-progress "$@"
