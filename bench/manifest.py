"""The manifest every benchmark runs on, unless given one.

../shared/bench/manifest-8x68.json when it is there (the shared benchmark election, next to
the project), else the embedded copy of the same 8-contest, 68-option manifest: the project
runs its benchmarks on its own.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_MANIFEST = ROOT.parent / "shared" / "bench" / "manifest-8x68.json"
EMBEDDED_MANIFEST = ROOT / "node" / "data" / "demo-manifest.json"


def bench_manifest(path: Path | str | None = None) -> Path:
    """`path` if given, else the shared manifest when present, else the embedded one."""
    if path is not None:
        return Path(path).resolve()
    return SHARED_MANIFEST if SHARED_MANIFEST.is_file() else EMBEDDED_MANIFEST
