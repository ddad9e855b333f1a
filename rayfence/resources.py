"""The Ray custom resources dicomflow gives its nodes: a node role is the resource `dicomflow_<role>`,
which places SCP actors, workflow workers and DICOMweb replicas on the nodes that have the role."""

from __future__ import annotations

RESOURCE_PREFIX = "dicomflow_"


def role_resource(role: str) -> str:
    return RESOURCE_PREFIX + role
