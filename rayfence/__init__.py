"""The fence around Ray's and Ray Serve's internals: everything in dicomflow that patches Ray, or
depends on something Ray does not promise (a private module, an actor's class name, the
configuration file its HAProxy template writes), lives in this package and nowhere else.

- `replica_grpc`: rebinds each Serve replica's inter-deployment gRPC server from `[::]` to the
  node's address (`ray.serve._private.replica.add_port_to_grpc_server`).
- `haproxy_shim`: rewrites the HAProxy configuration Ray generates (wildcard binds, TLS on the
  DICOMweb bind, X-Forwarded-For) before it becomes the real HAProxy.
- `resources`: the Ray custom resources dicomflow names its node roles by.
- `metrics_binding`: Ray's Prometheus exporters, which it binds to every interface of a network
  node, on loopback (through `site/sitecustomize.py`, in Ray's exporting processes only).
- `replicas`: counts live DICOMweb replicas by node through Ray's state API and the replica
  actor's class name, which Serve derives from the application and deployment names.

Each breaks silently when Ray changes, so `check_version()` (called by `dicomflow up` and by each
replica) refuses a Ray release these were not written and tested against, and
tests/unit/test_rayfence_contract.py fails when a name they rely on disappears. An upgrade breaks
here, in one known room: run that test, adapt the module it names, then add the version below.
"""

from __future__ import annotations

from importlib.metadata import version as installed_version

# the Ray releases this fence was written and tested against (pyproject.toml and constraints.txt pin it)
SUPPORTED_RAY = ("2.60.0",)


class UnsupportedRay(RuntimeError):
    """The installed Ray is not one the fence was written for."""


def check_version(installed: str | None = None) -> None:
    # read from the package metadata: importing ray here would be too early for cluster/ray_env.py
    version = installed_version("ray") if installed is None else installed
    if version not in SUPPORTED_RAY:
        raise UnsupportedRay(
            f"Ray {version} is installed, but dicomflow's rayfence/ relies on Ray's internals and was written for Ray "
            f"{', '.join(SUPPORTED_RAY)} only: install that version (pip install -c constraints.txt -e .), "
            "or adapt rayfence/ and run tests/unit/test_rayfence_contract.py"
        )
