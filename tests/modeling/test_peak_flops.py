"""The dense peak FLOP/s table behind MFU: real CUDA device names, precisions, and the manual override."""

from __future__ import annotations

import pytest
import torch

from modeling.peak_flops import (
    PEAK_FLOPS,
    device_peak_flops,
    lookup_peak_flops,
    match_device,
    matmul_precision,
)


@pytest.mark.parametrize(("name", "key", "bf16_tflops"), [
    ("NVIDIA H200", "H200 SXM", 989.4),  # what the H200 SXM reports; Lightning's table matches nothing here
    ("NVIDIA H200 NVL", "H200 NVL", 835.5),
    ("NVIDIA GH200 480GB", "GH200", 989.4),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.5),
    ("NVIDIA H100 NVL", "H100 NVL", 835.5),
    ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
    ("NVIDIA A100-SXM4-40GB", "A100", 312.0),
    ("NVIDIA A100-PCIE-40GB", "A100", 312.0),
    ("NVIDIA A100 80GB PCIe", "A100", 312.0),
    ("NVIDIA L4", "L4", 121.0),
    ("NVIDIA L40S", "L40S", 362.05),
    ("NVIDIA L40", "L40", 181.0),
    ("NVIDIA A10G", "A10G", 125.0),
    ("NVIDIA A10", "A10", 125.0),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 165.2),
    ("NVIDIA RTX A6000", "RTX A6000", 154.8),
    ("NVIDIA GeForce RTX 3090", "RTX 3090", 71.0),
])
def test_real_device_names_find_their_dense_bf16_peak(name, key, bf16_tflops):
    assert match_device(name) == key
    assert lookup_peak_flops(name, "bf16") == pytest.approx(bf16_tflops * 1e12)
    assert lookup_peak_flops(name, torch.bfloat16) == lookup_peak_flops(name, "bf16")


def test_tf32_fp32_and_missing_precisions():
    assert lookup_peak_flops("NVIDIA H100 80GB HBM3", "tf32") == pytest.approx(494.7e12)
    assert lookup_peak_flops("NVIDIA H100 80GB HBM3", torch.float32) == pytest.approx(66.9e12)
    assert lookup_peak_flops("NVIDIA A100-PCIE-40GB", "tf32") == pytest.approx(156e12)
    assert match_device("Tesla V100-SXM2-16GB") == "V100 SXM2" and match_device("Tesla V100-PCIE-32GB") == "V100 PCIe"
    assert match_device("Tesla V100S-PCIE-32GB") == "V100S PCIe" and match_device("Tesla T4") == "T4"
    assert lookup_peak_flops("Tesla V100-SXM2-16GB", "fp16") == pytest.approx(125e12)
    assert lookup_peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 tensor cores: no MFU, not a wrong one


def test_unknown_devices_give_none():
    for name in ("NVIDIA GeForce RTX 3090 Ti", "AMD Instinct MI300X", "NVIDIA B200", ""):
        assert lookup_peak_flops(name, "bf16") is None
    assert device_peak_flops(torch.device("cpu"), "bf16-mixed") is None


def test_dense_figures_only():
    # every Hopper bf16 entry is at most the H100 SXM's dense 989.4 TFLOP/s (the sparse figures are twice that)
    for key, figures in PEAK_FLOPS.items():
        assert figures.get("bf16", 0) <= 989.4e12, key
        if "tf32" in figures and "bf16" in figures:
            assert figures["tf32"] <= 0.51 * figures["bf16"], key  # tf32 runs at about half the bf16 rate


def test_trainer_precision_maps_to_the_matmul_precision(monkeypatch):
    assert matmul_precision("bf16-mixed") == matmul_precision("bf16-true") == "bf16"
    assert matmul_precision("16-mixed") == "fp16"
    assert matmul_precision("32-true") == "fp32"  # torch's default float32 matmul precision is "highest"
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert matmul_precision("32-true") == "tf32"
    assert matmul_precision("64-true") is None


def test_a_cuda_device_finds_its_peak_by_name(monkeypatch):
    # what TokenThroughputMonitor asks on a GPU machine, without one: the device name is all the lookup reads
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert device_peak_flops(torch.device("cuda", 0), "bf16-mixed") == pytest.approx(989.4e12)
    assert device_peak_flops(torch.device("cuda", 0), "16-mixed") == pytest.approx(989.4e12)
    assert device_peak_flops(torch.device("cuda", 0), "32-true") == pytest.approx(66.9e12)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA B200")
    assert device_peak_flops(torch.device("cuda", 0), "bf16-mixed") is None
