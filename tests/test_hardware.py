"""Hardware keys, name slugs and the GPUs each xdist worker owns."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pytest_rllm.hardware import (
    cpu_hardware_key,
    detect_hardware_key,
    gpu_hardware_key,
    gpu_ids_for_worker,
    native_bf16,
    safe_name,
    slug,
    worker_index,
)

SAPPHIRE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz
"""
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\nflags\t: sse2 avx avx2\n"
SKYLAKE = "model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz\nflags\t: avx avx2 avx512f\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm sve\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize(
    ("cpuinfo", "key"),
    [
        (SAPPHIRE, "cpu-intel-xeon-platinum-8480-amx"),
        (EPYC, "cpu-amd-epyc-7763-64-core-processor-avx2"),
        (SKYLAKE, "cpu-intel-xeon-gold-6148-avx512"),
    ],
)
def test_cpu_key_names_model_and_best_isa(cpuinfo: str, key: str) -> None:
    assert cpu_hardware_key(cpuinfo) == key


def test_cpu_key_without_model_name_falls_back_to_the_machine() -> None:
    key = cpu_hardware_key(GRAVITON, machine="aarch64")
    assert key.startswith("cpu-") and key.endswith("-sve")
    assert cpu_hardware_key("", machine="riscv64").endswith("-riscv64")


def test_gpu_key_counts_each_kind() -> None:
    assert gpu_hardware_key(["NVIDIA H100 80GB HBM3"] * 8) == "gpu-8xnvidia-h100-80gb-hbm3"
    assert gpu_hardware_key(["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]) == (
        "gpu-1xnvidia-a100-sxm4-40gb-1xnvidia-h100-80gb-hbm3"
    )
    with pytest.raises(ValueError):
        gpu_hardware_key([])


def test_importing_these_modules_loads_nothing_heavy() -> None:
    # pytest imports the plugin on every run, so these must stay cheap to import.
    code = (
        "import sys, pytest_rllm.hardware, pytest_rllm.compare, pytest_rllm.baselines, pytest_rllm.report;"
        "print(sorted(m for m in ('vllm', 'torch', 'pynvml', 'matplotlib', 'lm_eval') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_detected_key_is_stable_and_safe() -> None:
    key = detect_hardware_key()
    assert key == detect_hardware_key()
    assert re.fullmatch(r"(cpu|gpu)-[a-z0-9x-]+", key), key
    assert safe_name(key) == key


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek-ai--DeepSeek-R1-Distill-Qwen-7B"),
        ("pocket", "pocket"),
        ("/models/Qwen2.5-7B-Instruct-AWQ/", "Qwen2.5-7B-Instruct-AWQ"),
        ("./local/checkpoints/my-model", "my-model"),
    ],
)
def test_model_slug(model: str, expected: str) -> None:
    assert slug(model) == expected


def test_local_folder_shaped_like_a_hub_id_uses_its_folder_name(tmp_path, monkeypatch) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert slug("org/name") == "name"


def test_safe_name_never_merges_different_ids() -> None:
    a, b = safe_name("test_x[a/b]"), safe_name("test_x[a_b]")
    assert a != b and "/" not in a
    assert safe_name("test_x[awq-7b]") == "test_x[awq-7b]"  # safe ids stay readable
    assert not safe_name("../etc").startswith(".")
    assert safe_name("CON") != "CON"
    assert len(safe_name("t" * 500)) <= 100
    assert safe_name("t" * 500) != safe_name("t" * 499)


@pytest.mark.parametrize(
    ("worker", "k", "total", "ids"),
    [
        ("gw0", 1, 4, [0]),
        ("gw3", 1, 4, [3]),
        ("gw1", 2, 4, [2, 3]),
        ("master", 2, 4, [0, 1]),
        (None, 1, 1, [0]),
    ],
)
def test_gpu_ids_for_worker(worker: str | None, k: int, total: int, ids: list[int]) -> None:
    assert gpu_ids_for_worker(worker, k, total) == ids


def test_too_few_gpus_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"gw2 needs GPUs 4\.\.5.*only 4 GPU.*-n 2 or fewer.*--rllm-gpus-per-worker"):
        gpu_ids_for_worker("gw2", 2, 4)
    with pytest.raises(ValueError, match="no GPU is visible"):
        gpu_ids_for_worker("gw0", 1, 0)
    with pytest.raises(ValueError, match="worker id"):
        worker_index("worker-1")


GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize(
    ("cpuinfo", "found"),
    [
        (SAPPHIRE, (["amx_bf16"], ("avx512_bf16", "amx_bf16"))),
        (EPYC, ([], ("avx512_bf16", "amx_bf16"))),
        (SKYLAKE, ([], ("avx512_bf16", "amx_bf16"))),  # AVX-512 without its bf16 extension
        (GRAVITON, ([], ("bf16",))),
        (GRAVITON3, (["bf16"], ("bf16",))),
        ("processor\t: 0\nmodel name\t: POWER9\n", None),  # no flags line: not known
        ("", None),
    ],
)
def test_native_bf16_reads_the_flags_of_the_cpus_architecture(cpuinfo, found):
    assert native_bf16(cpuinfo) == found
