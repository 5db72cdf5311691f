#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun (Lightning's torchelastic environment).
#
#   launch/torchrun.sh [EXTRA modeling.train fit ARGS...]
#
# One node, every GPU:
#   CONFIG=configs/train/gpt2-scratch.yaml launch/torchrun.sh
# Two nodes of 8 GPUs: run on each node, NODE_RANK 0 on the node whose address is MASTER_ADDR:
#   NNODES=2 NPROC_PER_NODE=8 NODE_RANK=0 MASTER_ADDR=10.0.0.1 CONFIG=configs/train/gpt2-scratch.yaml launch/torchrun.sh
#   NNODES=2 NPROC_PER_NODE=8 NODE_RANK=1 MASTER_ADDR=10.0.0.1 CONFIG=configs/train/gpt2-scratch.yaml launch/torchrun.sh
# Two CPU processes (gloo), e.g. to try DDP on a laptop:
#   NPROC_PER_NODE=2 CONFIG=configs/train/tiny-cpu.yaml launch/torchrun.sh --trainer.accelerator cpu
#
# Knobs (environment variables, defaults in brackets):
#   CONFIG          training config (python -m modeling.train fit --config) [configs/train/gpt2-scratch.yaml]
#   NNODES          number of nodes [1]
#   NPROC_PER_NODE  processes (GPUs) per node [the GPUs nvidia-smi lists, else 1]
#   NODE_RANK       this node's rank, 0..NNODES-1 [0]
#   MASTER_ADDR     address of node 0, reachable from every node [127.0.0.1]
#   MASTER_PORT     free TCP port on node 0 [29500]
#   STRATEGY        Lightning strategy (ddp, fsdp, deepspeed_stage_2, ...) [ddp]
#   RESUME          1: continue from the newest last.ckpt under trainer.default_root_dir (--ckpt_path last),
#                   starting from scratch when there is none; 0: always start from scratch [1]
#   MAX_RESTARTS    times torchrun restarts all workers after a failure (each restart resumes from last.ckpt) [0]
#   TORCHRUN        the torchrun command [torchrun]
# Extra arguments go to `modeling.train fit` after the launcher's own, so they override them.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

gpus() {
  local n=0
  if command -v nvidia-smi >/dev/null 2>&1; then n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
  if (( n > 0 )); then echo "$n"; else echo 1; fi
}

CONFIG="${CONFIG:-configs/train/gpt2-scratch.yaml}"
NNODES="${NNODES:-1}"
NPROC_PER_NODE="${NPROC_PER_NODE:-$(gpus)}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
STRATEGY="${STRATEGY:-ddp}"
RESUME="${RESUME:-1}"
MAX_RESTARTS="${MAX_RESTARTS:-0}"
TORCHRUN="${TORCHRUN:-torchrun}"

if [[ ! -f "$CONFIG" ]]; then
  echo "error: CONFIG=$CONFIG is not a file (set CONFIG to a training config, e.g. configs/train/tiny-cpu.yaml)" >&2
  exit 2
fi
for knob in NNODES NPROC_PER_NODE NODE_RANK MASTER_PORT MAX_RESTARTS; do
  if [[ ! "${!knob}" =~ ^[0-9]+$ ]]; then
    echo "error: $knob=${!knob} is not a whole number" >&2
    exit 2
  fi
done
if (( NODE_RANK >= NNODES )); then
  echo "error: NODE_RANK=$NODE_RANK must be below NNODES=$NNODES" >&2
  exit 2
fi

resume=()
if [[ "$RESUME" == 1 ]]; then resume=(--ckpt_path last); fi

# Lightning checks that devices x num_nodes equals the world size torchrun sets up.
set -x
exec "$TORCHRUN" \
  --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --node-rank "$NODE_RANK" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" --max-restarts "$MAX_RESTARTS" \
  -m modeling.train fit --config "$CONFIG" \
  --trainer.num_nodes "$NNODES" --trainer.devices "$NPROC_PER_NODE" --trainer.strategy "$STRATEGY" \
  "${resume[@]}" "$@"
