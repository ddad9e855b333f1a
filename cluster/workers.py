"""The Ray actors dicomflow runs: DIMSE SCPs (sharing one port) and the workflow worker."""

from __future__ import annotations

from typing import cast

import ray
from ray.actor import ActorClass

from archive.settings import Settings

ACTOR_PREFIX = "dicomflow"


def start_actors(settings: Settings) -> list:
    from actors.scp import DimseScpActor
    from actors.worker import WorkflowWorkerActor

    # mypy does not apply class decorators: @ray.remote made these ActorClasses
    worker_class = cast(ActorClass, WorkflowWorkerActor)
    scp_class = cast(ActorClass, DimseScpActor)
    data = settings.model_dump(mode="json")
    worker = worker_class.options(name=f"{ACTOR_PREFIX}-worker", lifetime=None).remote(data)
    scps = [
        scp_class.options(name=f"{ACTOR_PREFIX}-scp-{i}").remote(data, i)
        for i in range(settings.scp_processes)
    ]
    ray.get([worker.ready.remote(), *[scp.ready.remote() for scp in scps]], timeout=120)
    return [worker, *scps]


def stop_actors(actors: list) -> None:
    """Let each actor finish what it holds (flush signals, close pools) before Ray goes."""
    try:
        ray.get([actor.stop.remote() for actor in actors], timeout=30)
    except Exception:  # noqa: BLE001 - they are killed with Ray anyway
        pass
