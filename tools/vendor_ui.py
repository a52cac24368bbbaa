"""Vendor the web page's third-party assets from the npm registry into the package.

Run at development time only (the service never fetches anything)::

    python tools/vendor_ui.py

For each package in ``PACKAGES`` it runs ``npm pack NAME@VERSION`` in a scratch directory (no
``node_modules`` is created or committed), checks the tarball against the registry's integrity
hash, copies the listed files to ``timeline/static/vendor/NAME/`` and writes
``timeline/static/vendor/manifest.json``: name, version, licence, tarball, integrity and the
SHA-256 of every file copied. ``tests/unit/test_vendored_assets.py`` checks the files against it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "timeline" / "static" / "vendor"
MANIFEST = VENDOR / "manifest.json"

# name, version, {file in the tarball's package/ folder: name in timeline/static/vendor/NAME/}
PACKAGES = [
    (
        "vis-timeline",
        "8.5.4",
        {
            # the standalone build bundles its dependencies (vis-data, moment, hammer) and its CSS,
            # which it adds to the page in <style> elements: one ES module, nothing else to load
            "standalone/esm/vis-timeline-graph2d.min.mjs": "vis-timeline-graph2d.min.mjs",
            "LICENSE.md": "LICENSE.md",
            "LICENSE.MIT.txt": "LICENSE.MIT.txt",
            "LICENSE.Apache-2.0.txt": "LICENSE.Apache-2.0.txt",
        },
    ),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npm(*args: str, cwd: Path) -> str:
    return subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def vendor(name: str, version: str, files: dict[str, str], scratch: Path) -> dict[str, object]:
    info = json.loads(npm("view", f"{name}@{version}", "--json", "license", "dist", cwd=scratch))
    tarball = scratch / npm("pack", f"{name}@{version}", cwd=scratch).splitlines()[-1]
    algorithm, _, expected = info["dist"]["integrity"].partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{tarball.name}: integrity {digest} is not the registry's {expected}")
    target = VENDOR / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        for source, dest in files.items():
            member = archive.extractfile(f"package/{source}")
            assert member is not None, source
            (target / dest).write_bytes(member.read())
    return {
        "name": name,
        "version": version,
        "license": info["license"],
        "tarball": info["dist"]["tarball"],
        "integrity": info["dist"]["integrity"],
        "files": {f"{name}/{dest}": sha256(target / dest) for dest in files.values()},
    }


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vendor-ui-") as scratch:
        entries = [vendor(name, version, files, Path(scratch)) for name, version, files in PACKAGES]
    MANIFEST.write_text(json.dumps({"packages": entries}, indent=2) + "\n")
    for entry in entries:
        print(f"{entry['name']} {entry['version']} ({entry['license']}): {len(entry['files'])} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
