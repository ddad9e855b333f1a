"""`dicomflow viewer install`: the OHIF viewer that dicomflow serves at /viewer.

OHIF publishes its prebuilt app on the npm registry: the tarball of `@ohif/app` carries the built
`dist/`. `npm pack` fetches just that tarball (`npm install` would also pull the app's ~40 build
dependencies) with the machine's own npm settings (registry, proxy, CA) and checks it against the
registry's integrity hash. The build assumes it is served at `/`; relocating it to `/viewer/` means
rewriting the few absolute paths it carries (index.html, the webpack public path, CSS fonts), which
is done here once, at install time, and checked: a new OHIF layout fails the install, not the browser.

The result goes to the checkout's `.viewer/` (gitignored), swapped in whole, so a running archive
serves either the old viewer or the new one, never half of each.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from archive.config.settings import Settings
from serve.viewer import VIEWER_HOME, VIEWER_PATH

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
MANIFEST = "installed.json"
Say = Callable[[str], None]


class ViewerInstallError(Exception):
    """Why the viewer could not be installed, in words an operator can act on."""


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("viewer", help="the OHIF viewer served at /viewer")
    actions = parser.add_subparsers(dest="viewer_command", required=True)
    install_cmd = actions.add_parser("install", help=f"fetch {OHIF_PACKAGE} from the npm registry into {VIEWER_HOME}")
    install_cmd.add_argument("--version", default=OHIF_VERSION, help=f"the {OHIF_PACKAGE} version (default {OHIF_VERSION})")
    install_cmd.add_argument("--force", action="store_true", help="reinstall even if this version is installed")


def cmd_viewer(settings: Settings, args: argparse.Namespace) -> int:
    try:
        install(args.version, force=args.force)
    except ViewerInstallError as err:
        print(f"dicomflow viewer: {err}", file=sys.stderr)
        return 1
    print(f"dicomflow viewer: served at {settings.dicomweb_origin}{VIEWER_PATH}/ while dicomflow runs")
    return 0


def installed_version(home: Path = VIEWER_HOME) -> str | None:
    try:
        manifest = json.loads((home / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("version") if (home / "dist" / "index.html").is_file() else None


def install(version: str = OHIF_VERSION, home: Path = VIEWER_HOME, force: bool = False, say: Say = print) -> bool:
    """Installs `version` into `home`; False when it was there already."""
    if not force and installed_version(home) == version:
        say(f"viewer: {OHIF_PACKAGE}@{version} is already installed in {home}")
        return False
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerInstallError("npm is not installed; `make viewer` installs it (Debian: apt-get install nodejs npm)")
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{home.name}-", suffix=".tmp", dir=home.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        started = time.monotonic()
        tarball, integrity = _npm_pack(npm, version, staging, say)
        count = _unpack(tarball, staging / "dist")
        tarball.unlink()
        say(f"viewer: unpacked {count} files; relocating to {VIEWER_PATH}/")
        edits = relocate(staging / "dist", VIEWER_PATH + "/")
        manifest = {
            "package": OHIF_PACKAGE,
            "version": version,
            "integrity": integrity,
            "base": VIEWER_PATH + "/",
            "relocated": edits,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _swap(staging, home)
        say(f"viewer: {OHIF_PACKAGE}@{version} installed in {home} ({time.monotonic() - started:.1f} s)")
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _npm_pack(npm: str, version: str, into: Path, say: Say) -> tuple[Path, str]:
    spec = f"{OHIF_PACKAGE}@{version}"
    say(f"viewer: downloading {spec} from the npm registry (about 50 MB) ...")
    try:
        done = subprocess.run(
            [npm, "pack", spec, "--json", "--pack-destination", str(into)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ViewerInstallError(f"`npm pack {spec}` took more than 15 minutes; is the npm registry reachable?")
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if " error " in f" {line.lower()} "] or done.stderr.splitlines()
        raise ViewerInstallError(f"`npm pack {spec}` failed (exit {done.returncode}):\n  " + "\n  ".join(errors[-8:]))
    try:
        packed = json.loads(done.stdout)[0]
        tarball = into / packed["filename"]
    except (ValueError, LookupError, TypeError):
        raise ViewerInstallError(f"`npm pack {spec}` printed no package description: {done.stdout[:300]!r}")
    if not tarball.is_file():
        raise ViewerInstallError(f"`npm pack {spec}` reported {tarball.name} but did not write it")
    say(f"viewer: {tarball.name}, {tarball.stat().st_size / 1e6:.1f} MB, integrity {packed.get('integrity', '?')[:24]}...")
    return tarball, str(packed.get("integrity", ""))


def _unpack(tarball: Path, dist: Path) -> int:
    """Only `package/dist/`, only regular files, only paths that stay inside `dist`."""
    count = 0
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if len(parts) < 3 or parts[:2] != ("package", "dist") or not member.isfile():
                continue
            if any(p in ("..", "") for p in parts) or member.name.startswith("/"):
                raise ViewerInstallError(f"the package holds an unsafe path: {member.name!r}")
            target = dist.joinpath(*parts[2:])
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
    if not (dist / "index.html").is_file():
        raise ViewerInstallError(f"{tarball.name} has no dist/index.html: not a prebuilt OHIF viewer")
    return count


def _relocations(base: str) -> list[tuple[str, re.Pattern[bytes], bytes, bool]]:
    """(files, absolute-path pattern, replacement, must match) for a build made for `/`."""
    b = base.encode()
    return [
        ("index.html", re.compile(rb'\b(href|src|content)="/(?!/)'), rb'\1="' + b, True),
        ("index.html", re.compile(rb'window\.PUBLIC_URL="/"'), b'window.PUBLIC_URL="' + b + b'"', True),
        # webpack loads every lazy chunk, worker and wasm file from its public path
        ("*.js", re.compile(rb'__webpack_require__\.p = "/";'), b'__webpack_require__.p = "' + b + b'";', True),
        ("*.js", re.compile(rb"'/dicom-microscopy-viewer/"), b"'" + b + b"dicom-microscopy-viewer/", False),
        ("*.css", re.compile(rb"url\(/(?!/)"), b"url(" + b, False),
        ("manifest.json", re.compile(rb'"/assets/'), b'"' + b + b"assets/", False),
    ]


def relocate(dist: Path, base: str) -> dict[str, int]:
    """Rewrites the build's absolute paths from `/` to `base`; returns the edits per file."""
    edits: dict[str, int] = {}
    for pattern, regex, replacement, required in _relocations(base):
        found = 0
        for path in sorted(dist.glob(pattern)):
            text, n = regex.subn(replacement, path.read_bytes())
            if n:
                path.write_bytes(text)
                edits[path.name] = edits.get(path.name, 0) + n
                found += n
        if required and not found:
            raise ViewerInstallError(
                f"no {regex.pattern.decode()!r} in {pattern}: this OHIF build is laid out differently, "
                f"so it cannot be moved to {base}; install version {OHIF_VERSION}"
            )
    return edits


def _swap(staging: Path, home: Path) -> None:
    """Renames on one file system: the new tree appears whole."""
    old = home.with_name(home.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if home.exists():
        home.rename(old)
    staging.rename(home)
    shutil.rmtree(old, ignore_errors=True)
