"""Runs Ray Serve's HAProxy with its stats and metrics listeners on `bind_host`.

Ray's HAProxy template binds those two to every interface and has no setting for the address, so
Ray is pointed (RAY_SERVE_HAPROXY_BINARY_PATH) at a small script that calls this module: it
rewrites the wildcard `bind` lines of the configuration Ray passes with `-f`, then becomes the real
HAProxy (same pid, same arguments), so Ray's reloads and signals work as before.

Usage: python -m cluster.haproxy_shim REAL_HAPROXY BIND_HOST [haproxy arguments...]
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

_WILDCARD_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|::|\[::\])?:(\d+)", re.MULTILINE)


def pin_binds(config: str, host: str) -> str:
    """Every `bind *:PORT` / `bind :PORT` becomes `bind HOST:PORT`; explicit addresses stay."""
    return _WILDCARD_BIND.sub(lambda m: f"{m.group(1)}{host}:{m.group(2)}", config)


def config_path(args: list[str]) -> Path | None:
    for flag, value in zip(args, args[1:]):
        if flag == "-f":
            return Path(value)
    return None


def main(argv: list[str] | None = None) -> None:
    real, host, *args = argv if argv is not None else sys.argv[1:]
    path = config_path(args)
    if path is not None and path.exists():
        text = path.read_text()
        pinned = pin_binds(text, host)
        if pinned != text:
            path.write_text(pinned)
    os.execv(real, [real, *args])


if __name__ == "__main__":
    main()
