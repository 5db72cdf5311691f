#!/usr/bin/env bash
# bash benchmarks/gpu_check.sh [--wheels DIR] [benchmarks/gpu_check.py options]
#
# Runs the GPU check on a machine with a CUDA build of torch and no network: checks that the packages the
# training commands import are there (and says which are missing, with the pip names), then runs
# benchmarks/gpu_check.py from the repository root. Nothing is downloaded. With --wheels DIR, wheels brought
# along in DIR (e.g. `pip download --no-deps -d DIR jsonargparse docstring-parser typeshed-client
# bitsandbytes` on a machine with network) are installed first into a scratch folder put on PYTHONPATH.
set -euo pipefail
PY=${PYTHON:-python3}
wheels=""
if [[ "${1:-}" == "--wheels" ]]; then
  wheels=$(cd "$2" && pwd); shift 2  # absolute before the cd below
fi
cd "$(dirname "$0")/.."

if [[ -n "$wheels" ]]; then
  site=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
  echo "gpu_check.sh: installing $(ls "$wheels"/*.whl | wc -l) wheel(s) from $wheels into $site (no index)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

"$PY" - <<'PYCODE'
import importlib.util, sys
need = {"torch": "torch (a CUDA build)", "lightning": "lightning", "transformers": "transformers",
        "tokenizers": "tokenizers", "peft": "peft", "torchmetrics": "torchmetrics",
        "jsonargparse": "jsonargparse[signatures]", "docstring_parser": "docstring-parser",
        "typeshed_client": "typeshed-client", "pyarrow": "pyarrow", "yaml": "pyyaml", "numpy": "numpy",
        "safetensors": "safetensors"}
optional = {"bitsandbytes": "bitsandbytes (only the qlora check)"}
missing = [pip for mod, pip in need.items() if importlib.util.find_spec(mod) is None]
missing_opt = [pip for mod, pip in optional.items() if importlib.util.find_spec(mod) is None]
print(f"gpu_check.sh: Python {sys.version.split()[0]}; required packages "
      + ("all present" if not missing else "MISSING: " + ", ".join(missing))
      + ("" if not missing_opt else "; optional missing: " + ", ".join(missing_opt)))
if missing:
    print("gpu_check.sh: install them (pip install -e . on a machine with network, or bring wheels and pass "
          "--wheels DIR); the checks that need them are skipped", file=sys.stderr)
PYCODE

export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
