"""The `dicomflow` command: up, down, status."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from archive.config.settings import TEMPORAL_UI_PATH, Settings, SettingsError, load_settings
from cluster import (
    certs,
    cli_audit,
    cli_cluster,
    cli_forward,
    cli_import,
    cli_lifecycle,
    cli_metadata,
    cli_migrate,
    cli_rejected,
    cli_send,
    cli_sweep,
    cli_worklist,
    viewer_install,
)
from cluster.cli_cluster import print_cluster
from cluster.process_exit import exit_without_teardown
from cluster.ray_env import join_as_client
from cluster.redaction import redacted
from cluster.serve_ingress import ingress
from cluster.services.process import ServiceError, read_pid, stop_pid


def _pidfile(settings: Settings) -> Path:
    return settings.var_path / "run" / "dicomflow.pid"


def _ray_address(settings: Settings) -> str:
    from cluster.ray_runtime import ray_address_file

    path = ray_address_file(settings)
    return settings.cluster.ray_address or (path.read_text().strip() if path.exists() else "(not started)")


def banner(settings: Settings) -> str:
    h = settings.bind_host
    rows = [
        ("DICOMweb", f"{settings.dicomweb_origin}/dicomweb   (STOW also at /stow-rs/v1/studies)"),
        ("Health", f"{settings.dicomweb_origin}/health"),
        ("API docs", f"{settings.dicomweb_origin}/docs"),
        (
            "Viewer",
            f"{settings.dicomweb_origin}/viewer/"
            + ("" if viewer_install.installed_version() else "   (not installed: make viewer)"),
        ),
        *(
            [
                (
                    "HAProxy",
                    f"stats http://{h}:{settings.web.haproxy_stats_port}/stats, metrics :{settings.web.haproxy_metrics_port}/metrics",
                )
            ]
            if ingress(settings) == "haproxy"
            else []
        ),
        (
            "DIMSE",
            f"AE title {settings.dimse.ae_title} on {h}:{settings.dimse.port}"
            + (
                f", DICOM TLS on {h}:{settings.dimse.tls_port}"
                if settings.tls.enabled
                else ", no DICOM TLS (see `dicomflow certs`)"
            ),
        ),
        (
            "Temporal UI",
            f"{settings.dicomweb_origin}{TEMPORAL_UI_PATH}/   (operator role; log in at /temporal-login)"
            if not settings.temporal.address
            else "(external Temporal: its own UI)",
        ),
        ("Temporal", settings.effective_temporal_address()),
        (
            "Ray dashboard",
            f"http://{h}:{settings.cluster.ray_dashboard_port}   (token: ~/.ray/auth_token)"
            if not settings.cluster.ray_address
            else settings.cluster.ray_address,
        ),
        ("Ray cluster", f"{_ray_address(settings)}   (`dicomflow join` it from another node; `dicomflow scale workers=N`)"),
        ("PostgreSQL", redacted(settings.effective_postgres_dsn())),
        ("Redis", redacted(settings.effective_redis_url())),
        ("Blobs", settings.storage.s3_endpoint or str(settings.var_path / "blobs")),
    ]
    if settings.hl7.enabled:
        tls = " over TLS" if settings.hl7.tls else ""
        rows.append(("HL7 ADT", f"MLLP{tls} on {h}:{settings.hl7.port} from {', '.join(sorted(settings.hl7.senders))}"))
    if settings.auth == "none":
        rows.insert(0, ("Auth", "OFF: every caller on this host is trusted with every tenant (auth = 'none')"))
    else:
        rows.insert(0, ("Auth", f"OIDC bearer tokens from {', '.join(settings.oidc.issuer)} (audience {settings.oidc.audience})"))
    if ingress(settings) != settings.web.serve_ingress:
        rows.insert(1, ("Ingress", "Serve's own proxy: Ray's HAProxy ingress only works with a loopback bind_host"))
    if not settings.web.https and not settings.bind_is_loopback:
        rows.insert(
            1,
            (
                "HTTPS",
                "OFF on a network address: tokens and images cross the network in clear; "
                "set https = true or put a TLS proxy in front",
            ),
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _already_running(settings: Settings) -> bool:
    running = read_pid(_pidfile(settings))
    if running and running != os.getpid():
        print(f"dicomflow is already running (pid {running}) with var dir {settings.var_path}; run `dicomflow down` first.")
        return True
    return False


def cmd_up(settings: Settings) -> int:
    from cluster.stack import Stack

    exposure = settings.exposure_problem()
    if exposure:
        print(f"dicomflow: will not start: {exposure}", file=sys.stderr)
        return 2
    if _already_running(settings):
        return 1
    pidfile = _pidfile(settings)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{os.getpid()}\n")
    stop_requested = threading.Event()

    def on_signal(*_: object) -> None:
        stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    started = time.monotonic()
    print(f"dicomflow: starting (settings env '{settings.env}', data in {settings.var_path})", flush=True)
    stack = Stack(settings, say=lambda line: print(line, flush=True))
    try:
        stack.start()
        for sig in (signal.SIGINT, signal.SIGTERM):  # ray.init replaced ours with sys.exit
            signal.signal(sig, on_signal)
        print(
            f"\ndicomflow is ready in {time.monotonic() - started:.1f} s:\n{banner(settings)}\n"
            "Press Ctrl-C or run `dicomflow down` to stop.",
            flush=True,
        )
        (settings.var_path / "run" / "ready").write_text(f"{time.time()}\n")
        while not stop_requested.wait(1.0):
            pass
        print("dicomflow: stopping ...", flush=True)
        return 0
    except (ServiceError, OSError) as err:
        print(f"dicomflow: cannot start: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ray may have put its sys.exit handler back
            signal.signal(sig, on_signal)
        (settings.var_path / "run" / "ready").unlink(missing_ok=True)
        stack.stop()
        pidfile.unlink(missing_ok=True)
        print("dicomflow: stopped", flush=True)


def cmd_up_detached(settings: Settings) -> int:
    """`up` as a daemon in its own session, so the shell that started it may close; the command
    returns once the archive is ready, and `dicomflow down` stops it."""
    if _already_running(settings):
        return 1
    log_path = settings.var_path / "log" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ready = settings.var_path / "run" / "ready"
    ready.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "up"],
            stdin=subprocess.DEVNULL,
            stdout=log,  # noqa: S603
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"dicomflow: starting in the background (pid {daemon.pid}); its output goes to {log_path}", flush=True)
    while not ready.exists():
        if daemon.poll() is not None:
            print(
                f"dicomflow: could not start (exit {daemon.returncode}); the end of {log_path}:\n"
                + "\n".join(log_path.read_text(errors="replace").splitlines()[-15:]),
                file=sys.stderr,
            )
            return daemon.returncode or 1
        time.sleep(0.5)
    print(f"dicomflow is ready:\n{banner(settings)}\nIt keeps running after this shell closes; `dicomflow down` stops it.")
    return 0


def cmd_down(settings: Settings, timeout: float) -> int:
    from cluster.serve_ingress import stop_leftover_haproxy
    from cluster.services.postgres import embedded_postgres_service
    from cluster.services.redis import embedded_redis_service
    from cluster.services.temporal import embedded_temporal_service

    pid = read_pid(_pidfile(settings))
    if pid is not None:
        print(f"dicomflow: stopping pid {pid} ...")
        stop_pid(pid, sig=signal.SIGTERM, timeout=timeout)
    # anything left by a run that was killed outright
    for service in (embedded_temporal_service(settings), embedded_redis_service(settings), embedded_postgres_service(settings)):
        if read_pid(service.pidfile) is not None:
            print(f"dicomflow: stopping leftover {service.name}")
        service.stop_leftover()
    stop_leftover_haproxy(settings)
    _pidfile(settings).unlink(missing_ok=True)
    print("dicomflow: down")
    return 0


def cmd_status(settings: Settings, as_json: bool) -> int:
    from cluster.backlog_report import backlog, backlog_lines
    from serve.health import full_health

    out = sys.stdout
    if as_json:  # Ray's driver prints cluster events ("node ... marked dead") to stdout from a thread of its own
        sys.stdout = sys.stderr
    report = asyncio.run(full_health(settings))
    waiting = asyncio.run(backlog(settings))
    cluster = cli_cluster.cluster_status(settings)
    if as_json:
        print(json.dumps({**report, "backlog": waiting, "cluster": cluster}, indent=2), file=out, flush=True)
    else:
        for name, check in report["services"].items():
            mark = "up  " if check["ok"] else "DOWN"
            detail = check.get("version") if check["ok"] else check.get("error")
            print(f"  {mark} {name.ljust(14)} {check['url']}  {detail}")
        print("\n".join(backlog_lines(waiting)))
        if cluster is not None:
            print_cluster(cluster)
        print(f"dicomflow: {report['status']}")
    return 0 if report["status"] == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dicomflow", description="DICOM archive: DIMSE, DICOMweb, durable workflows.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start every service and stay in the foreground (Ctrl-C stops)")
    up.add_argument(
        "--detach", action="store_true", help="run in the background, outliving this shell; `dicomflow down` stops it"
    )
    down = sub.add_parser("down", help="stop what `up` started")
    down.add_argument("--timeout", type=float, default=60.0)
    status = sub.add_parser("status", help="check every service; exit 1 if one is down")
    status.add_argument("--json", action="store_true")
    cli_audit.add_parser(sub)
    cli_worklist.add_parser(sub)
    cli_send.add_parser(sub)
    cli_sweep.add_parser(sub)
    cli_forward.add_parser(sub)
    cli_rejected.add_parser(sub)
    cli_lifecycle.add_parsers(sub)
    cli_metadata.add_parser(sub)
    cli_migrate.add_parser(sub)
    cli_import.add_parser(sub)
    certs.add_certs_parser(sub)
    viewer_install.add_parser(sub)
    cli_cluster.add_parsers(sub)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"dicomflow: {err}", file=sys.stderr)
        return 2
    if args.command in ("status", "join", "leave", "scale"):
        join_as_client(settings)  # they talk to the running cluster as Ray drivers
    if args.command == "up":
        return cmd_up_detached(settings) if args.detach else cmd_up(settings)
    if args.command == "down":
        return cmd_down(settings, args.timeout)
    if args.command == "audit":
        return cli_audit.cmd_audit(settings, args)
    if args.command == "send":
        return cli_send.cmd_send(settings, args)
    if args.command == "worklist":
        return cli_worklist.cmd_worklist(settings, args)
    if args.command == "sweep":
        return cli_sweep.cmd_sweep(settings, args)
    if args.command == "forward":
        return cli_forward.cmd_forward(settings, args)
    if args.command == "lifecycle":
        return cli_lifecycle.cmd_lifecycle(settings, args)
    if args.command == "hold":
        return cli_lifecycle.cmd_hold(settings, args)
    if args.command == "rejected":
        return cli_rejected.cmd_rejected(settings, args)
    if args.command == "metadata":
        return cli_metadata.cmd_metadata(settings, args)
    if args.command == "migrate":
        return cli_migrate.cmd_migrate(settings, args)
    if args.command == "import":
        return cli_import.cmd_import(settings, args)
    if args.command == "viewer":
        return viewer_install.cmd_viewer(settings, args)
    if args.command in ("join", "leave", "scale"):
        return {"join": cli_cluster.cmd_join, "leave": cli_cluster.cmd_leave, "scale": cli_cluster.cmd_scale}[args.command](
            settings, args
        )
    if args.command == "certs":
        return certs.run_certs_command(args, settings.var_path)
    return cmd_status(settings, args.json)


# Commands that open a Temporal client. Its Rust runtime's threads can outlive the event loop and
# abort the interpreter's teardown (SIGABRT, "PyGILState_Release: thread state ... must be current";
# temporalio/sdk-python#300): seen once in CI after `lifecycle run` had printed its full answer.
_TEMPORAL_CLIENT_COMMANDS = frozenset({"status", "forward", "lifecycle", "rejected", "metadata", "migrate"})


def run() -> None:
    """The console script: `main`, then an exit that skips teardown where a Temporal client ran."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in _TEMPORAL_CLIENT_COMMANDS:
        exit_without_teardown(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
