#!/usr/bin/env python3
"""Build dist/distroface.pyz: the server, its web UI and every dependency in one file.

    python zipapp/build.py [--dist DIR]

Steps: `pip install --target` the project (distroface.py + distroface_ui/ as
package data) and its dependencies into a fresh staging directory, then let
shiv zip that directory with the entry point `distroface:main`.

The zipapp carries native extensions (bcrypt, zstandard) built for the Python
and platform that ran this script, so the file is named after them, e.g.
`dist/distroface-cp311-linux_x86_64.pyz`; `dist/distroface.pyz` is a copy of
the newest build. At first start shiv unpacks the bundle to ~/.shiv (or
$SHIV_ROOT) and reuses that cache afterwards.

Needs pip and shiv in the running interpreter: `pip install -e '.[zipapp]'`.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINT = "distroface:main"
SHEBANG = "/usr/bin/env python3"


def platform_tag() -> str:
    """`cp311-linux_x86_64`: the interpreter ABI and platform the bundle was built for."""
    impl = {"cpython": "cp", "pypy": "pp"}.get(sys.implementation.name, sys.implementation.name)
    pyver = f"{impl}{sys.version_info.major}{sys.version_info.minor}"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{pyver}-{plat}"


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def clean_setuptools_leftovers() -> None:
    """setuptools builds in-tree; stale files in build/ would end up in the wheel."""
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    for egg_info in ROOT.glob("*.egg-info"):
        shutil.rmtree(egg_info, ignore_errors=True)


def stage(site_packages: Path) -> None:
    """Install the project and its dependencies into `site_packages`."""
    clean_setuptools_leftovers()
    try:
        run(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-compile", "--target", site_packages, ROOT)
    finally:
        clean_setuptools_leftovers()
    # Console scripts written by `pip --target` are useless inside the zipapp.
    shutil.rmtree(site_packages / "bin", ignore_errors=True)
    # Names the build directory only; keeps builds from different checkouts identical.
    for direct_url in site_packages.glob("distroface-*.dist-info/direct_url.json"):
        direct_url.unlink()
    for cache in site_packages.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    for needed in ("distroface.py", "distroface_ui/index.html"):
        if not (site_packages / needed).is_file():
            sys.exit(f"build.py: {needed} is missing from the installed project; check pyproject.toml")


def build(dist: Path) -> Path:
    try:
        import shiv  # noqa: F401
    except ImportError:
        sys.exit("build.py: shiv is not installed here; run: pip install -e '.[zipapp]'")
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / f"distroface-{platform_tag()}.pyz"
    with tempfile.TemporaryDirectory(prefix="distroface-zipapp-") as tmp:
        site_packages = Path(tmp) / "site-packages"
        site_packages.mkdir()
        stage(site_packages)
        partial = target.with_suffix(".pyz.part")
        run(sys.executable, "-m", "shiv", "--site-packages", site_packages,
            "--entry-point", ENTRY_POINT, "--python", SHEBANG,
            "--compressed", "--reproducible", "--output-file", partial)
        partial.replace(target)
    latest = dist / "distroface.pyz"
    tmp_latest = dist / "distroface.pyz.part"
    shutil.copyfile(target, tmp_latest)
    tmp_latest.chmod(0o755)
    tmp_latest.replace(latest)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist",
                        help="output directory (default: dist/ in the repository)")
    args = parser.parse_args()
    target = build(args.dist.resolve())
    size = target.stat().st_size / 1e6
    print(f"built {target} ({size:.1f} MB) and {target.parent / 'distroface.pyz'}")


if __name__ == "__main__":
    main()
