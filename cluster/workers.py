"""Starting and stopping the actors through the cluster controller (cluster/controller.py)."""

from __future__ import annotations

from typing import cast

import ray
from ray.actor import ActorClass, ActorHandle

from archive.config.settings import Settings
from cluster.controller import CONTROLLER_NAME, NAMESPACE, ClusterController, scale_file

HEAD_NODE_RESOURCE = "node:__internal_head__"


def start_controller(settings: Settings) -> ActorHandle:
    """The detached controller places the SCPs and workers and waits for them to answer."""
    scale_file(settings).unlink(missing_ok=True)  # a new `up` starts from the settings again
    controller_class = cast(ActorClass, ClusterController)  # mypy does not apply @ray.remote
    controller = cast(
        ActorHandle,
        controller_class.options(
            name=CONTROLLER_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            resources={HEAD_NODE_RESOURCE: 0.001},  # restarted there too: var/run on the head holds what `scale` chose
        ).remote(settings.model_dump(mode="json")),
    )
    ray.get(controller.start.remote(), timeout=120)
    ray.get(controller.ready.remote(), timeout=180)
    return controller


def find_controller() -> ActorHandle:
    return cast(ActorHandle, ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE))


def stop_controller(controller: ActorHandle) -> None:
    """Each actor finishes what it holds (flush signals, close pools) before Ray goes."""
    try:
        ray.get(controller.stop_all.remote(), timeout=90)
    except Exception:  # noqa: BLE001 - they are killed with Ray anyway
        pass
    ray.kill(controller, no_restart=True)
