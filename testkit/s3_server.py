"""A local S3-compatible server for tests and benchmarks: moto in server mode (no MinIO server
binary can be installed here); the archive talks to it with the same minio client as to MinIO."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import urllib3

from testkit.running_stack import free_port

ACCESS_KEY = SECRET_KEY = "testing"
REGION = "us-east-1"


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """host:port of a fresh S3 endpoint on loopback, stopped on exit."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib3.PoolManager().request("GET", f"http://127.0.0.1:{port}/", timeout=1, retries=False)
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def stack_s3_settings(endpoint: str, bucket: str = "dicomflow") -> dict[str, object]:
    return {
        "s3_endpoint": endpoint,
        "s3_bucket": bucket,
        "s3_access_key": ACCESS_KEY,
        "s3_secret_key": SECRET_KEY,
        "s3_region": REGION,
        "s3_secure": False,
    }


def cold_s3_settings(endpoint: str, bucket: str = "dicomflow-cold") -> dict[str, object]:
    """The same server as the cold tier (archive/blobstore/tiered.py)."""
    return {f"cold_{name}": value for name, value in stack_s3_settings(endpoint, bucket).items()}
