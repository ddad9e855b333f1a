"""Everything `dicomflow up` runs, started in dependency order and stopped in reverse."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict

from archive.config.embedded_secrets import DEIDENTIFY, OIDC_CACHE, ensure_secret
from archive.config.settings import Settings
from archive.index.grants import grant_application_role
from archive.index.schema import migrate
from archive.index.tenants import tenant_names
from archive.routing.admission import named_tenants, target_refusal
from cluster.node_link import embedded_ports, links_configured, node_link_service
from cluster.serve_ingress import ingress
from cluster.services.postgres import lock_owner, start_postgres
from cluster.services.process import ManagedProcess, ServiceError, port_is_free, require_free_port
from cluster.services.redis import start_redis
from cluster.services.temporal import start_temporal
from rayfence import check_version as check_ray_version

log = logging.getLogger("dicomflow")
T = TypeVar("T")


def application_role(settings: Settings, owner_dsn: str) -> str | None:
    """The role the archive's processes log in as, when it is not the schema owner's."""
    app = conninfo_to_dict(settings.effective_postgres_dsn()).get("user")
    owner = conninfo_to_dict(owner_dsn).get("user")
    return str(app) if app and app != owner else None


async def _migrate(settings: Settings, owner_dsn: str) -> None:
    """Migrations and grants as the schema owner; every other process uses the application role.
    Then the settings' rules that copy into another tenant are checked against the tenants known."""
    async with await AsyncConnection.connect(owner_dsn, autocommit=True) as conn:
        await migrate(conn)
        role = application_role(settings, owner_dsn)
        if role:
            await grant_application_role(conn, role)
        known = named_tenants(settings.default_tenant, settings.dimse, settings.routing) | await tenant_names(conn)
    for rule in settings.routing.forward_rules:
        refused = target_refusal(rule, known)
        if refused:
            raise ServiceError(f"{refused}; fix forward_rules")


class Stack:
    def __init__(self, settings: Settings, say: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.say = say
        self.services: list[ManagedProcess] = []
        self.ray_started = False
        self.actors: list = []  # Ray kills an actor once its last handle is gone: keep them

    def start(self) -> None:
        s = self.settings
        require_free_port("DICOMweb (Ray Serve)", s.bind_host, s.web.http_port, "http_port")
        require_free_port("DIMSE SCP", s.bind_host, s.dimse.port, "dimse_port")
        if s.tls.enabled:
            require_free_port("DICOM TLS", s.bind_host, s.dimse.tls_port, "dimse_tls_port")
        if s.hl7.enabled:
            require_free_port("HL7 MLLP", s.bind_host, s.hl7.port, "hl7_port")
        if not s.cluster.ray_address:
            require_free_port("Ray dashboard", s.bind_host, s.cluster.ray_dashboard_port, "ray_dashboard_port")
        if ingress(s) == "haproxy":
            require_free_port("HAProxy stats", s.bind_host, s.web.haproxy_stats_port, "haproxy_stats_port")
            require_free_port("HAProxy metrics", s.bind_host, s.web.haproxy_metrics_port, "haproxy_metrics_port")
        owner_dsn = s.effective_postgres_owner_dsn()
        if s.index.dsn is None:
            owner_dsn = self._timed("PostgreSQL", self._start_postgres)
        embedded: list[tuple[str, bool, Callable[[Settings], ManagedProcess]]] = [
            ("Redis", s.cache.url is None, start_redis),
            ("Temporal dev server", s.temporal.address is None, start_temporal),
        ]
        for label, wanted, starter in embedded:
            if wanted:
                self._timed(label, partial(self._start_service, starter))
        if links_configured(s) and not s.bind_is_loopback and embedded_ports(s):
            self._timed("node links (mutual TLS to the embedded services)", self._start_node_links)
        if s.auth == "oidc" and not s.oidc.cache_key:
            ensure_secret(s.var_path, OIDC_CACHE)  # before any replica or SCP verifies a token
        if not s.routing.deidentify_key:  # a rule added at run time may ask for de-identification too
            ensure_secret(s.var_path, DEIDENTIFY)
        self._timed("index schema", lambda: asyncio.run(_migrate(s, owner_dsn)))
        if s.index.dsn is None:
            lock_owner(s, str(conninfo_to_dict(owner_dsn)["password"]))
        self._start_ray()

    def _start_node_links(self) -> None:
        s = self.settings
        for port in embedded_ports(s):
            require_free_port("node link", s.bind_host, port, "the embedded services' ports")
        link = node_link_service(s, "serve", s.bind_host)
        link.stop_leftover()
        link.start()
        link.wait_ready(lambda: not all(port_is_free(s.bind_host, port) for port in embedded_ports(s)), timeout=30)
        self.services.append(link)

    def _start_postgres(self) -> str:
        service, owner_dsn = start_postgres(self.settings)
        self.services.append(service)
        return owner_dsn

    def _start_ray(self) -> None:
        from cluster.ray_env import bind_ray_metrics, pin_ray_to_loopback, quiet_serve_controller, use_ray_tls
        from cluster.serve_ingress import configure_ingress

        pin_ray_to_loopback(self.settings)
        quiet_serve_controller()
        bind_ray_metrics(self.settings)
        if use_ray_tls(self.settings):
            self.say("  Ray's gRPC in mutual TLS with the archive's certificate (a network bind_host)")
        check_ray_version()  # before anything of Ray's internals is touched
        configure_ingress(self.settings)
        from cluster.ray_runtime import start_ray, start_serve
        from cluster.workers import start_controller

        self._timed("Ray", lambda: start_ray(self.settings))
        self.ray_started = True
        self._timed("Ray Serve (DICOMweb)", lambda: start_serve(self.settings))
        self._timed(
            "Ray actors (cluster controller, DIMSE SCPs, workflow workers)",
            lambda: self.actors.append(start_controller(self.settings)),
        )

    def _start_service(self, starter: Callable[[Settings], ManagedProcess]) -> None:
        self.services.append(starter(self.settings))

    def _timed(self, label: str, step: Callable[[], T]) -> T:
        started = time.monotonic()
        result = step()
        self.say(f"  started {label} ({time.monotonic() - started:.1f} s)")
        return result

    def stop(self) -> None:
        if self.ray_started:
            from cluster.ray_runtime import stop_ray
            from cluster.workers import stop_controller

            for actor in self.actors:
                self._timed_stop("Ray actors", partial(stop_controller, actor))
            self.actors.clear()
            self._timed_stop("Ray Serve and Ray", stop_ray)
            self.ray_started = False
        for service in reversed(self.services):
            self._timed_stop(service.name, service.stop)
        self.services.clear()

    def _timed_stop(self, label: str, step: Callable[[], object]) -> None:
        """Every part gets its stop, whatever an earlier one raised (a second Ctrl-C included)."""
        started = time.monotonic()
        try:
            step()
            self.say(f"  stopped {label} ({time.monotonic() - started:.1f} s)")
        except BaseException as err:  # noqa: BLE001
            self.say(f"  could not stop {label} cleanly: {type(err).__name__}: {err}")
