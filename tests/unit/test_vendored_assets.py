"""The web page's third-party files are exactly those vendored from the npm registry
(tools/vendor_ui.py), with their version and licence recorded, and the package carries them."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "timeline" / "static"
VENDOR = STATIC / "vendor"


def _manifest() -> list[dict[str, object]]:
    return json.loads((VENDOR / "manifest.json").read_text())["packages"]


def test_every_vendored_file_matches_its_recorded_sha256() -> None:
    for package in _manifest():
        for name, digest in package["files"].items():  # type: ignore[union-attr]
            assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, f"{name} was changed"


def test_every_file_in_the_vendor_folder_is_in_the_manifest_with_version_and_licence() -> None:
    listed = {name for package in _manifest() for name in package["files"]}  # type: ignore[union-attr]
    present = {str(p.relative_to(VENDOR)) for p in VENDOR.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert present == listed
    for package in _manifest():
        assert package["version"] and package["license"] and str(package["integrity"]).startswith("sha512-")
        assert any(name.endswith(("LICENSE.md", "LICENSE", "LICENSE.MIT.txt")) for name in package["files"])  # type: ignore[union-attr]


def test_the_package_data_patterns_carry_every_page_file() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["timeline"]
    carried = {p for pattern in patterns for p in (ROOT / "timeline").glob(pattern)}  # as setuptools globs them
    files = {p for p in STATIC.rglob("*") if p.is_file()}
    assert files and files - carried == set(), f"not in [tool.setuptools.package-data]: {files - carried}"


def test_the_pages_own_files_name_no_other_host() -> None:
    for path in (STATIC / "ui").iterdir():
        text = path.read_text(encoding="utf-8")
        for scheme in ("http://", "https://", "//cdn", "url(//"):
            assert scheme not in text or path.suffix == ".svg" and scheme == "http://", f"{path.name} names {scheme}"
