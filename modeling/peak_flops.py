"""Dense peak FLOP/s of GPUs, the denominator of model FLOPs utilization (MFU).

Lightning's own table (``lightning.fabric.utilities.throughput.get_available_flops``) lists some parts with their
2:4-sparsity figures (twice what dense matrix products can reach) and matches names that real devices do not
carry: it finds nothing for ``torch.cuda.get_device_name()`` == "NVIDIA H200". This table holds dense tensor-core
figures only, from the vendor's datasheets, and matches the names CUDA reports::

    >>> lookup_peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    989400000000000.0

Unknown devices give None; ``TokenThroughputMonitor(peak_flops=...)`` (``--throughput.peak_flops``) sets the
figure by hand, for them or to measure against a measured rather than a datasheet peak.
"""

from __future__ import annotations

import re

import torch

T = 1e12

#: Dense peak FLOP/s per precision, by part. Keys: "bf16", "fp16" (tensor cores, fp32 accumulation), "tf32"
#: (fp32 matmuls on tensor cores, ``torch.backends.cuda.matmul.allow_tf32``), "fp32" (plain CUDA cores), "fp8".
#: A missing key: the part has no tensor-core path for that precision (V100 and T4 have no bf16).
PEAK_FLOPS: dict[str, dict[str, float]] = {
    # Hopper. H200 and GH200 have the H100 SXM's compute (they differ in memory); NVL parts run at lower clocks.
    "H200 SXM": {"bf16": 989.4 * T, "fp16": 989.4 * T, "tf32": 494.7 * T, "fp32": 66.9 * T, "fp8": 1978.9 * T},
    "H200 NVL": {"bf16": 835.5 * T, "fp16": 835.5 * T, "tf32": 417.5 * T, "fp32": 60.0 * T, "fp8": 1670.5 * T},
    "GH200": {"bf16": 989.4 * T, "fp16": 989.4 * T, "tf32": 494.7 * T, "fp32": 66.9 * T, "fp8": 1978.9 * T},
    "H100 SXM": {"bf16": 989.4 * T, "fp16": 989.4 * T, "tf32": 494.7 * T, "fp32": 66.9 * T, "fp8": 1978.9 * T},
    "H100 PCIe": {"bf16": 756.5 * T, "fp16": 756.5 * T, "tf32": 378.0 * T, "fp32": 51.2 * T, "fp8": 1513.0 * T},
    # per GPU of an NVL pair (the datasheet's per-board figures with sparsity, halved)
    "H100 NVL": {"bf16": 835.5 * T, "fp16": 835.5 * T, "tf32": 417.5 * T, "fp32": 60.0 * T, "fp8": 1670.5 * T},
    # Ada
    "L40S": {"bf16": 362.05 * T, "fp16": 362.05 * T, "tf32": 183.0 * T, "fp32": 91.6 * T, "fp8": 733.0 * T},
    "L40": {"bf16": 181.0 * T, "fp16": 181.0 * T, "tf32": 90.5 * T, "fp32": 90.5 * T, "fp8": 362.0 * T},
    "L4": {"bf16": 121.0 * T, "fp16": 121.0 * T, "tf32": 60.0 * T, "fp32": 30.3 * T, "fp8": 242.0 * T},
    # GeForce: fp16/bf16 with fp32 accumulation (what training uses) runs at half the fp16-accumulate rate
    "RTX 4090": {"bf16": 165.2 * T, "fp16": 165.2 * T, "tf32": 82.6 * T, "fp32": 82.6 * T, "fp8": 330.3 * T},
    # Ampere. SXM and PCIe A100s, 40 and 80 GB, share the datasheet's figures.
    "A100": {"bf16": 312.0 * T, "fp16": 312.0 * T, "tf32": 156.0 * T, "fp32": 19.5 * T},
    "A10": {"bf16": 125.0 * T, "fp16": 125.0 * T, "tf32": 62.5 * T, "fp32": 31.2 * T},
    # AWS publishes no A10G datasheet; same GA102 chip as the A10, so the A10's figures (an upper bound)
    "A10G": {"bf16": 125.0 * T, "fp16": 125.0 * T, "tf32": 62.5 * T, "fp32": 31.2 * T},
    "RTX A6000": {"bf16": 154.8 * T, "fp16": 154.8 * T, "tf32": 77.4 * T, "fp32": 38.7 * T},
    "A40": {"bf16": 149.7 * T, "fp16": 149.7 * T, "tf32": 74.8 * T, "fp32": 37.4 * T},
    "RTX 3090": {"bf16": 71.0 * T, "fp16": 71.0 * T, "tf32": 35.6 * T, "fp32": 35.6 * T},
    # Volta and Turing: fp16 tensor cores only
    "V100 SXM2": {"fp16": 125.0 * T, "fp32": 15.7 * T},
    "V100 PCIe": {"fp16": 112.0 * T, "fp32": 14.0 * T},
    "V100S PCIe": {"fp16": 130.0 * T, "fp32": 16.4 * T},
    "T4": {"fp16": 65.0 * T, "fp32": 8.1 * T},
}

#: (words that must all appear in the device name, table key), most specific first. Names are split into
#: lower-case words at spaces and dashes: "NVIDIA A100-SXM4-80GB" -> {"nvidia", "a100", "sxm4", "80gb"}.
_NAME_RULES: list[tuple[tuple[str, ...], str]] = [
    (("gh200",), "GH200"),
    (("h200", "nvl"), "H200 NVL"),
    (("h200",), "H200 SXM"),  # "NVIDIA H200": the SXM part
    (("h100", "nvl"), "H100 NVL"),
    (("h100", "pcie"), "H100 PCIe"),
    (("h100",), "H100 SXM"),  # "NVIDIA H100 80GB HBM3", "NVIDIA H100"
    (("l40s",), "L40S"),
    (("l40",), "L40"),
    (("l4",), "L4"),
    (("rtx", "4090"), "RTX 4090"),
    (("a100",), "A100"),
    (("a10g",), "A10G"),
    (("a10",), "A10"),
    (("rtx", "a6000"), "RTX A6000"),
    (("a40",), "A40"),
    (("rtx", "3090"), "RTX 3090"),
    (("v100s",), "V100S PCIe"),
    (("v100", "pcie"), "V100 PCIe"),
    (("v100",), "V100 SXM2"),
    (("t4",), "T4"),
]

_DTYPE_KEYS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def match_device(name: str) -> str | None:
    """The table key for a ``torch.cuda.get_device_name()`` string, or None for an unknown device."""
    words = set(re.split(r"[\s\-_]+", name.lower()))
    if words & {"ti", "super"}:  # an RTX 3090 Ti is not an RTX 3090: unknown rather than a guess
        return None
    return next((key for required, key in _NAME_RULES if words.issuperset(required)), None)


def lookup_peak_flops(device_name: str, precision: str | torch.dtype) -> float | None:
    """Dense peak FLOP/s of one device of ``device_name`` for ``precision`` ("bf16", "fp16", "tf32", "fp32",
    "fp8" or a torch dtype); None when the device or its support of that precision is unknown."""
    key = match_device(device_name)
    precision = _DTYPE_KEYS.get(precision, precision) if isinstance(precision, torch.dtype) else precision
    return PEAK_FLOPS[key].get(str(precision)) if key is not None else None


def matmul_precision(trainer_precision: str) -> str | None:
    """The precision a Lightning ``trainer.precision`` runs its matrix products in: "bf16", "fp16", "tf32" or
    "fp32" (32-true, depending on ``torch.set_float32_matmul_precision``); None for others (64-true, fp8)."""
    p = str(trainer_precision)
    if p.startswith("bf16"):
        return "bf16"
    if p.startswith("16"):
        return "fp16"
    if p.startswith("32"):
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return None


def device_peak_flops(device: torch.device, trainer_precision: str) -> float | None:
    """Dense peak FLOP/s of ``device`` when training at ``trainer_precision``; None off CUDA or when unknown."""
    precision = matmul_precision(trainer_precision)
    if device.type != "cuda" or precision is None:
        return None
    return lookup_peak_flops(torch.cuda.get_device_name(device), precision)
