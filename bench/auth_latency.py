"""What the token check costs a reader (issue 9, "Measure"): QIDO-RS and WADO-RS latency with
auth = "oidc" against auth = "none", in one run.

Two dicomflow stacks run side by side on loopback (`dicomflow up`, free ports), with the same
settings except `auth`: one with auth = "none", one with auth = "oidc" trusting a real OpenID
Connect issuer on loopback (testkit.oidc_issuer, served from this process), which the archive
discovers and fetches keys from over HTTP exactly as it would a hospital's Keycloak. The same real
files go into both by STOW-RS (the Siemens EPI study of dcm_qa_nih, 8 instances in 4 series; the
512x512 CT as stored and as JPEG 2000, each under its own UIDs; a 10-frame MR), and every study
workflow has finished (series metadata generated) before anything is measured. Four modes:

- `none`: the auth = "none" stack, no Authorization header;
- `none + token header`: the same stack sent the RS256 token, which it ignores: what carrying the
  ~700-byte header costs (client, HAProxy, HTTP parsing) without any check;
- `oidc RS256`: the auth stack with an RS256 bearer token (2048-bit RSA, Keycloak's default);
- `oidc ES256`: the same stack with an ES256 token.

Besides the QIDO-RS and WADO-RS workloads, `GET /health/live` (no token check in any mode) is the
control: it shows how far the two stacks differ by themselves (placement, caches, noise).

Each mode has its own keep-alive `requests.Session` (one connection, as a viewer keeps one); every
request names the tenant with `x-tenant`. After a warm-up, rounds: in each round every workload
takes one request per mode, the modes in a fresh random order each time (seeded), so the noise of
this shared 2-core machine falls on all modes alike and each mode follows every other about equally
often (a fixed rotation kept one mode always right after another on the same, warm, stack: the
trial run showed that as a bias of ~0.5 ms). Reported per workload and mode: median and p90
(ms, client-observed, whole body read), and mode - none at the median (with a bootstrap 95%
interval) and at p90. Target (issue 9): oidc - none at most +1 ms at the median, because the
issuer's keys come from the replica's copy / the Redis cache, never from the issuer, per request:
the issuer counts its discovery and JWKS hits, and during the measured rounds they must stay 0.

Then the CPU the Serve replica spends per request, by mode (blocks of requests to one mode, the
replica's CPU time from /proc before and after, its idle CPU subtracted): CPU time is not stretched
by waiting for a core, so it stays readable on a busy machine where latencies do not (the replica
runs at nice 15, as every Ray worker does, so any CPU it adds turns into more waiting when the cores
are contended).

Last, the archive's own `TokenVerifier.verify` is timed in this process with the keys the replica
put in the stack's Redis (fetching from the issuer disabled), back to back (the CPU's caches hot) and
with other work between calls (caches cold, as in a replica), and its parts, which splits the
difference into the token check itself and everything around it.

    python -m bench.auth_latency                              # bench/results/<date>-auth-latency.{json,md}
    AUTH_BENCH_SAMPLES=50 python -m bench.auth_latency        # a trial (-partial file)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import psutil
import redis
import requests
from pydicom import dcmread

from archive.identity import tokens
from archive.identity.jwks import Jwks, JwksCache, KeysUnavailable
from archive.identity.tokens import TokenVerifier
from bench.dimse_qr import code_version
from bench.qido_scale import percentile
from bench.run import DATA, RESULTS, machine
from bench.targets import number
from bench.workloads import _multipart, files_of, restamped
from testkit.oidc_issuer import Alg, OidcIssuer
from testkit.running_stack import RunningStack, stack_overrides
from testkit.temporal_waits import wait_completed

DEFAULT_SAMPLES = 400
SAMPLES = int(os.environ.get("AUTH_BENCH_SAMPLES", str(DEFAULT_SAMPLES)))  # per workload and mode, measured
WARMUP = int(os.environ.get("AUTH_BENCH_WARMUP", "30"))  # per workload and mode, not recorded
VERIFY_CALLS = int(os.environ.get("AUTH_BENCH_VERIFY_CALLS", "2000"))  # in-process TokenVerifier.verify calls
TARGET_MS = 1.0  # issue 9: oidc - none at the median
TENANT = "authbench"
AUDIENCE = "dicomflow"
VIEWER_ORIGIN = "http://localhost:3000"  # both stacks get the same CORS list, so the middleware stack is the same
BASELINE = "none"
HEADER_ONLY = "none + token header"  # the auth = "none" stack, sent the RS256 token it ignores: the header's own cost
RS256 = "oidc RS256"
ES256 = "oidc ES256"
FLOOR = "GET /health/live (no token check in any mode)"  # the stacks' floor: tells them apart without auth
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
JSON = "application/dicom+json"
BOOTSTRAP = 2000
CPU_BLOCKS = int(os.environ.get("AUTH_BENCH_CPU_BLOCKS", "8"))  # blocks per workload and mode in the replica CPU part
CPU_BLOCK_REQUESTS = int(os.environ.get("AUTH_BENCH_CPU_BLOCK_REQUESTS", "60"))
IDLE_SECONDS = 5.0  # the replicas' idle CPU is measured over this long
SHARED_MACHINE = (
    "numbers taken on a shared 2-core machine: other engineers' test stacks ran at the same time, so "
    "absolute values are noisy; the modes were interleaved request by request, so each saw the same noise"
)


@dataclass(frozen=True)
class Workload:
    name: str
    path: str  # from the server root
    accept: str


@dataclass
class Mode:
    name: str
    stack: RunningStack
    headers: dict[str, str]
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def root(self) -> str:
        return self.stack.url("")

    def get(self, workload: Workload) -> tuple[float, requests.Response]:
        """Seconds for one request over this mode's keep-alive connection, body read; RuntimeError unless 200."""
        started = time.perf_counter()
        response = self.session.get(self.root + workload.path, headers={"Accept": workload.accept}, timeout=60)
        _ = response.content
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{self.name} {workload.name}: HTTP {response.status_code} {response.text[:300]}")
        return elapsed, response


def dataset_files(workdir: Path) -> list[Path]:
    """The real files both stacks get: an MR study of 4 series, the CT uncompressed and JPEG 2000 (the
    shared data gives both encodings one SOP Instance UID, so each gets its own), a 10-frame MR."""
    pydicom_data = DATA / "pydicom-data" / "data_store" / "data"
    ct = [restamped(pydicom_data / name, workdir) for name in ("693_UNCR.dcm", "693_J2KR.dcm")]
    return [*files_of(DATA / "dcm_qa_nih"), *ct, pydicom_data / "emri_small.dcm"]


def read_workloads(files: list[Path]) -> list[Workload]:
    """The requests a viewer opening a study sends, from the stored files' own UIDs."""
    headers = {p.name: dcmread(p, stop_before_pixels=True) for p in files}
    mr = next(h for name, h in headers.items() if name.startswith("epi_"))
    ct = headers["restamped-693_UNCR.dcm"]
    j2k = headers["restamped-693_J2KR.dcm"]
    multiframe = headers["emri_small.dcm"]

    def instance(h: Any) -> str:
        return f"/dicomweb/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{h.SOPInstanceUID}"

    return [
        Workload(FLOOR, "/health/live", "application/json"),
        Workload("QIDO studies (3 studies)", "/dicomweb/studies", JSON),
        Workload("QIDO series of a study (4 series)", f"/dicomweb/studies/{mr.StudyInstanceUID}/series", JSON),
        Workload(
            "WADO-RS series metadata (2 instances)",
            f"/dicomweb/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}/metadata",
            JSON,
        ),
        Workload("WADO-RS frame 1, CT 512x512 uncompressed", instance(ct) + "/frames/1", FRAME_ACCEPT),
        Workload("WADO-RS frame 1, CT 512x512 JPEG 2000", instance(j2k) + "/frames/1", FRAME_ACCEPT),
        Workload("WADO-RS frame 5 of a 10-frame MR", instance(multiframe) + "/frames/5", FRAME_ACCEPT),
    ]


def stow(mode: Mode, files: list[Path]) -> None:
    body = _multipart(files, "authbenchboundary")
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=authbenchboundary', "Accept": JSON}
    response = mode.session.post(mode.root + "/dicomweb/studies", data=body, headers=headers, timeout=600)
    if response.status_code != 200:
        raise RuntimeError(f"STOW-RS into the {mode.name} stack: HTTP {response.status_code} {response.text[:500]}")


def study_uids(files: list[Path]) -> list[str]:
    return sorted({str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in files})


def answer_shape(workload: Workload, response: requests.Response) -> object:
    """What must be the same in every mode: the QIDO answers' UIDs, the body size otherwise
    (a multipart body differs only in its random boundary)."""
    if workload.path == "/health/live":
        return response.json()["status"]
    if workload.path.endswith(("/studies", "/series")):
        key = "0020000E" if workload.path.endswith("/series") else "0020000D"
        return sorted(item[key]["Value"][0] for item in response.json())
    return len(response.content) // 100  # boundaries of different lengths: compare to 100 bytes


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def median_difference_interval(base: list[float], other: list[float], seed: int = 5) -> tuple[float, float]:
    """Bootstrap 95% interval of median(other) - median(base)."""
    rng = random.Random(seed)
    diffs = sorted(
        statistics.median(rng.choices(other, k=len(other))) - statistics.median(rng.choices(base, k=len(base)))
        for _ in range(BOOTSTRAP)
    )
    return diffs[int(0.025 * BOOTSTRAP)], diffs[int(0.975 * BOOTSTRAP) - 1]


class AuthLatency:
    """Both stacks and the issuer up, the same data in each; then warm-up and interleaved rounds."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.issuer = OidcIssuer().start()
        common: dict[str, Any] = {"cors_allow_origins": [VIEWER_ORIGIN]}
        self.plain = RunningStack(stack_overrides(workdir / "none" / "var", auth="none", **common), workdir / "none.log")
        self.secured = RunningStack(
            stack_overrides(
                workdir / "oidc" / "var", auth="oidc", oidc_issuer=[self.issuer.issuer], oidc_audience=AUDIENCE, **common
            ),
            workdir / "oidc.log",
        )
        tenant = {"x-tenant": TENANT}
        rs256, es256 = self.token("RS256"), self.token("ES256")
        self.modes = [
            Mode(BASELINE, self.plain, dict(tenant)),
            Mode(HEADER_ONLY, self.plain, {**tenant, "Authorization": f"Bearer {rs256}"}),
            Mode(RS256, self.secured, {**tenant, "Authorization": f"Bearer {rs256}"}),
            Mode(ES256, self.secured, {**tenant, "Authorization": f"Bearer {es256}"}),
        ]
        for mode in self.modes:
            mode.session.headers.update(mode.headers)
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.after_same_stack: dict[str, dict[str, list[bool]]] = {}  # per sample: the request before went to the same stack
        self.checks: dict[str, object] = {}
        self.hits: dict[str, dict[str, int]] = {}
        self.verify_us: dict[str, dict[str, float]] = {}
        self.cpu_ms: dict[str, dict[str, list[float]]] = {}  # replica CPU ms per request, one value per block
        self.workloads: list[Workload] = []
        self.checks["bearer token length (RS256 / ES256) bytes"] = [len(rs256), len(es256)]

    def token(self, alg: Alg) -> str:
        return self.issuer.token(
            "bench-viewer", tenants=(TENANT,), roles=("reader", "writer"), audience=AUDIENCE, expires_in=4 * 3600, alg=alg
        )

    def note_hits(self, phase: str) -> None:
        self.hits[phase] = self.issuer.hits
        print(f"  issuer hits {phase}: {self.hits[phase]}", flush=True)

    def start(self) -> None:
        self.checks["load average (1/5/15 min) at start"] = [round(v, 2) for v in os.getloadavg()]
        for stack in (self.plain, self.secured):
            started = time.monotonic()
            stack.start()
            print(
                f"  stack {stack.settings.auth} up in {time.monotonic() - started:.0f} s on HTTP port {stack.settings.web.http_port}",
                flush=True,
            )
        self.note_hits("after both stacks started")
        empty = Workload("QIDO studies (empty archive)", "/dicomweb/studies", JSON)
        first = {}
        for mode in (self.modes[0], self.modes[2]):  # the replica's first token check fetches discovery + JWKS once
            seconds, _ = mode.get(empty)
            first[mode.name] = round(1000 * seconds, 1)
        self.checks["first request to each stack (QIDO, empty archive) ms"] = first
        self.note_hits("after the first request to each stack")
        anonymous = requests.get(self.secured.url("/dicomweb/studies"), headers={"x-tenant": TENANT, "Accept": JSON}, timeout=60)
        self.checks["oidc stack without a token: HTTP status"] = anonymous.status_code
        if anonymous.status_code != 401:
            raise RuntimeError(f"the oidc stack answered {anonymous.status_code} to a request without a token")

    def load(self) -> None:
        files = dataset_files(self.workdir)
        self.workloads = read_workloads(files)
        for mode in (self.modes[0], self.modes[2]):
            stow(mode, files)
        self.checks["instances stored into each stack by STOW-RS"] = len(files)
        workflow_ids = [f"study:{TENANT}:{uid}" for uid in study_uids(files)]
        for stack in (self.plain, self.secured):
            statuses = asyncio.run(wait_completed(stack.settings, workflow_ids, timeout=600))
            if any(status is None or status.name != "COMPLETED" for status in statuses.values()):
                raise RuntimeError(f"study workflows of the {stack.settings.auth} stack: {statuses}")
        self.checks["study workflows completed in each stack"] = len(workflow_ids)
        shapes: dict[str, object] = {}
        for workload in self.workloads:
            answers = {mode.name: answer_shape(workload, mode.get(workload)[1]) for mode in self.modes}
            if len({json.dumps(shape) for shape in answers.values()}) != 1:
                raise RuntimeError(f"{workload.name}: the modes got different answers: {answers}")
            shape = answers[BASELINE]
            shapes[workload.name] = f"{len(shape)} UIDs" if isinstance(shape, list) else shape
        self.checks["answers equal in every mode (QIDO: the same UIDs; else body size in 100 bytes)"] = shapes

    def rounds(self, count: int, record: bool, seed: int = 9) -> None:
        """Each workload takes one request per mode per round, the modes in a fresh random order each time:
        a fixed rotation would always send one mode right after another on the same (warm) stack."""
        rng = random.Random(seed)
        previous: RunningStack | None = None
        for rnd in range(count):
            for workload in self.workloads:
                order = list(self.modes)
                rng.shuffle(order)
                for mode in order:
                    seconds, _ = mode.get(workload)
                    if record:
                        self.samples.setdefault(workload.name, {}).setdefault(mode.name, []).append(1000 * seconds)
                        self.after_same_stack.setdefault(workload.name, {}).setdefault(mode.name, []).append(
                            previous is mode.stack
                        )
                    previous = mode.stack
            if record and (rnd + 1) % 50 == 0:
                print(f"  round {rnd + 1}/{count}", flush=True)

    def measure(self) -> None:
        self.rounds(WARMUP, record=False)
        self.note_hits("after warm-up")
        started = time.monotonic()
        self.rounds(SAMPLES, record=True)
        self.checks["measured rounds took s"] = round(time.monotonic() - started, 1)
        self.note_hits("after the measured rounds")

    def replica_cpu(self) -> None:
        """CPU the Serve replica spends per request, by mode: blocks of requests to one mode at a time, the
        replica's CPU time (every thread, from /proc, nanoseconds) before and after, less what the replica
        burns idle over as long. CPU time is not stretched by waiting for a core, so this stays readable
        when the machine is busy, where the latencies above do not."""
        replicas = {id(stack): serve_replica(stack) for stack in (self.plain, self.secured)}
        before = {key: process_cpu_seconds(proc) for key, proc in replicas.items()}
        time.sleep(IDLE_SECONDS)
        idle = {key: (process_cpu_seconds(proc) - before[key]) / IDLE_SECONDS for key, proc in replicas.items()}
        self.checks["Serve replica idle CPU (none / oidc stack) ms per s"] = [round(1000 * rate, 2) for rate in idle.values()]
        rng = random.Random(13)
        for _ in range(CPU_BLOCKS):
            for workload in self.workloads:
                order = list(self.modes)
                rng.shuffle(order)
                for mode in order:
                    proc = replicas[id(mode.stack)]
                    cpu, started = process_cpu_seconds(proc), time.monotonic()
                    for _ in range(CPU_BLOCK_REQUESTS):
                        mode.get(workload)
                    spent = process_cpu_seconds(proc) - cpu - idle[id(mode.stack)] * (time.monotonic() - started)
                    self.cpu_ms.setdefault(workload.name, {}).setdefault(mode.name, []).append(1000 * spent / CPU_BLOCK_REQUESTS)
        self.note_hits("after the replica CPU blocks")

    def verify_in_process(self) -> None:
        """The archive's TokenVerifier, keys from the oidc stack's Redis (as its replica keeps them);
        fetching from the issuer is disabled, so this cannot add issuer hits."""

        async def no_fetch(issuer: str) -> Jwks:
            raise KeysUnavailable(f"bench: fetching from {issuer} is disabled here; the keys must be in Redis")

        settings = self.secured.settings
        issuer = self.issuer.issuer
        cached = redis.Redis.from_url(settings.effective_redis_url())
        try:
            key = JwksCache._key("jwks", issuer)
            self.checks["issuer's key set in the oidc stack's Redis (TTL s)"] = cached.ttl(key) if cached.exists(key) else None
        finally:
            cached.close()

        async def run() -> None:
            from redis.asyncio import Redis

            client = Redis.from_url(settings.effective_redis_url())
            keys = JwksCache(
                client,
                settings.oidc.jwks_ttl_seconds,
                settings.oidc.refetch_seconds,
                mac_key=(settings.effective_oidc_cache_key() or "").encode(),
                fetch=no_fetch,
            )
            verifier = TokenVerifier(
                settings.oidc.issuer,
                settings.oidc.audience or "",
                keys,
                algorithms=list(settings.oidc.algorithms),
                leeway=settings.oidc.clock_skew_seconds,
            )
            jwks = await keys.keys(issuer)
            try:
                algs: tuple[Alg, ...] = ("RS256", "ES256")
                for alg in algs:
                    token = self.token(alg)
                    kid = jwt.get_unverified_header(token)["kid"]
                    public = tokens._match(jwks, kid, alg)
                    parts: dict[str, Callable[[], object]] = {
                        "parse header + unverified claims": lambda token=token: (
                            jwt.get_unverified_header(token),
                            jwt.decode(token, options={"verify_signature": False}),
                        ),
                        "JWK -> public key (tokens._match)": lambda kid=kid, alg=alg: tokens._match(jwks, kid, alg),
                        "signature + claims (jwt.decode with key)": lambda token=token, alg=alg, public=public: jwt.decode(
                            token, key=public, algorithms=[alg], audience=AUDIENCE, issuer=issuer, leeway=30
                        ),
                    }
                    result = {
                        "TokenVerifier.verify (whole)": await _time_async(lambda token=token: verifier.verify(token)),
                        "TokenVerifier.verify, other work between calls": await _time_async(
                            lambda token=token: verifier.verify(token), between=other_work, calls=VERIFY_CALLS // 4
                        ),
                    }
                    result.update({name: _time_sync(call) for name, call in parts.items()})
                    self.verify_us[alg] = result
                    print(f"  in-process {alg}: " + ", ".join(f"{k} {v:.0f} us" for k, v in result.items()), flush=True)
            finally:
                await client.aclose()

        asyncio.run(run())
        self.note_hits("after the in-process verify timing")

    def stop(self) -> None:
        for mode in self.modes:
            mode.session.close()
        for stack in (self.secured, self.plain):
            if stack.process is not None:
                try:
                    stack.stop()
                except Exception:
                    traceback.print_exc()
        self.issuer.stop()


def serve_replica(stack: RunningStack) -> psutil.Process:
    """The stack's one Serve replica process (Ray sets its title to ray::ServeReplica:...)."""
    found = [p for p in stack.descendants() if "ServeReplica" in " ".join(p.cmdline())]
    if len(found) != 1:
        raise RuntimeError(f"expected one Serve replica under the {stack.settings.auth} stack, found {len(found)}")
    return found[0]


def process_cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of every live thread of the process, in nanosecond resolution where /proc has schedstat
    (psutil's user + system counts 10 ms ticks)."""
    total = 0
    try:
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that just ended
    except OSError:
        times = proc.cpu_times()
        return times.user + times.system
    return total / 1e9


async def _time_async(call: Callable[[], Any], between: Callable[[], object] | None = None, calls: int = VERIFY_CALLS) -> float:
    """Median microseconds of `calls` awaited calls (after 50 unmeasured); `between` runs untimed before
    each one, so the call finds the CPU's caches full of other work, as it does in a replica."""
    for _ in range(50):
        await call()
    times = []
    for _ in range(calls):
        if between is not None:
            between()
        started = time.perf_counter()
        await call()
        times.append(1e6 * (time.perf_counter() - started))
    return statistics.median(times)


def other_work() -> None:
    """What a replica does between two token checks, roughly: parse DICOM, build and read JSON."""
    for path in sorted((DATA / "dcm_qa_nih").rglob("*.dcm"))[:4]:
        dcmread(path, stop_before_pixels=True)
    json.loads(json.dumps(_OTHER_DOCUMENT))


_OTHER_DOCUMENT = {f"k{i}": list(range(20)) for i in range(3000)}


def _time_sync(call: Callable[[], object]) -> float:
    for _ in range(50):
        call()
    times = []
    for _ in range(VERIFY_CALLS):
        started = time.perf_counter()
        call()
        times.append(1e6 * (time.perf_counter() - started))
    return statistics.median(times)


# report ---------------------------------------------------------------------------------------------


def results_of(bench: AuthLatency) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for workload, modes in bench.samples.items():
        modes = {mode.name: modes[mode.name] for mode in bench.modes if mode.name in modes}  # in the modes' own order
        stats = {name: summarize(values) for name, values in modes.items()}
        base = modes[BASELINE]
        differences = {}
        for name, values in modes.items():
            if name == BASELINE:
                continue
            low, high = median_difference_interval(base, values)
            paired = [o - b for o, b in zip(values, base, strict=True)]  # same round, adjacent in time
            median_delta = stats[name]["median"] - stats[BASELINE]["median"]
            differences[name] = {
                "median_ms": median_delta,
                "median_ci95_ms": [low, high],
                "p90_ms": stats[name]["p90"] - stats[BASELINE]["p90"],
                "median_of_paired_differences_ms": statistics.median(paired),
            }
            if name in (RS256, ES256) and workload != FLOOR:
                differences[name]["target"] = verdict(median_delta)
        out[workload] = {"modes": stats, "minus_none": differences}
    return out


def verdict(median_delta: float) -> str:
    return f"<= +{TARGET_MS:g} ms: {'met' if median_delta <= TARGET_MS else 'missed'}"


def overall(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The target over every DICOMweb workload: the largest oidc - none at the median, per token type."""
    out: dict[str, Any] = {}
    for name in (RS256, ES256):
        deltas = {w: r["minus_none"][name]["median_ms"] for w, r in results.items() if w != FLOOR and name in r["minus_none"]}
        if deltas:
            worst = max(deltas, key=lambda w: deltas[w])
            out[name] = {
                "largest_median_delta_ms": deltas[worst],
                "in": worst,
                "median_of_median_deltas_ms": statistics.median(deltas.values()),
                "target": verdict(deltas[worst]),
            }
    return out


def carryover(bench: AuthLatency) -> dict[str, float]:
    """How much a request gains when the one before it went to the same stack (warm replica, caches):
    median of (sample - its workload and mode's median), split by that, over every DICOMweb sample."""
    same: list[float] = []
    other: list[float] = []
    for workload, modes in bench.samples.items():
        if workload == FLOOR:
            continue
        for name, values in modes.items():
            middle = statistics.median(values)
            for value, flag in zip(values, bench.after_same_stack[workload][name], strict=True):
                (same if flag else other).append(value - middle)
    if not same or not other:
        return {}
    return {
        "after a request to the same stack, ms from the median": statistics.median(same),
        "after a request to the other stack, ms from the median": statistics.median(other),
        "samples after the same stack": len(same),
        "samples after the other stack": len(other),
    }


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + number(abs(value))


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| workload | mode | median ms | p90 ms | - none, median ms (95% CI) | - none, p90 ms | n | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workload, result in results.items():
        for name, st in result["modes"].items():
            diff = result["minus_none"].get(name)
            delta = (
                f"{_signed(diff['median_ms'])} ({_signed(diff['median_ci95_ms'][0])}..{_signed(diff['median_ci95_ms'][1])})"
                if diff
                else ""
            )
            rows.append(
                f"| {workload} | {name} | {number(st['median'])} | {number(st['p90'])} | {delta} | "
                f"{_signed(diff['p90_ms']) if diff else ''} | {st['n']} | {diff.get('target', '') if diff else ''} |"
            )
    return "\n".join(rows)


def cpu_results(bench: AuthLatency) -> dict[str, dict[str, Any]]:
    """Replica CPU ms per request: per workload and mode the median over blocks, and minus none."""
    out: dict[str, dict[str, Any]] = {}
    for workload, modes in bench.cpu_ms.items():
        medians = {mode.name: statistics.median(modes[mode.name]) for mode in bench.modes if mode.name in modes}
        out[workload] = {
            "median_ms": medians,
            "blocks_ms": modes,
            "minus_none_ms": {name: value - medians[BASELINE] for name, value in medians.items() if name != BASELINE},
        }
    return out


def cpu_table(cpu: dict[str, dict[str, Any]], modes: list[str]) -> str:
    others = [m for m in modes if m != BASELINE]
    rows = [
        "| workload | " + " | ".join(modes) + " | " + " | ".join(f"{m} - none" for m in others) + " |",
        "|---" * (1 + len(modes) + len(others)) + "|",
    ]
    for workload, result in cpu.items():
        rows.append(
            f"| {workload} | "
            + " | ".join(f"{result['median_ms'][m]:.2f}" for m in modes)
            + " | "
            + " | ".join(f"{result['minus_none_ms'][m]:+.2f}" for m in others)
            + " |"
        )
    return "\n".join(rows)


def measured_hits(hits: dict[str, dict[str, int]]) -> dict[str, int]:
    """Issuer hits from the end of the warm-up to the end of the last measurement over HTTP."""
    before = hits.get("after warm-up")
    after = hits.get("after the replica CPU blocks") or hits.get("after the measured rounds")
    if before is None or after is None:
        return {}
    return {kind: after[kind] - before[kind] for kind in after}


def report(bench: AuthLatency, failed: list[str], minutes: float) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d") + "-auth-latency"
    if SAMPLES != DEFAULT_SAMPLES or failed:
        stamp += "-partial"
    results = results_of(bench)
    cpu = cpu_results(bench)
    summary = overall(results)
    if bench.samples:
        bench.checks["order effect (why the order is random)"] = carryover(bench)
    during = measured_hits(bench.hits)
    overall_md = "; ".join(
        f"{name}: largest median delta {_signed(o['largest_median_delta_ms'])} ms ({o['in']}), {o['target']}"
        for name, o in summary.items()
    )
    header = (
        f"Token checks on the read path (issue 9), {stamp[:10]} on {machine()}; {SHARED_MACHINE}. Two dicomflow "
        f"stacks side by side on loopback (plain HTTP, one Serve replica each, HAProxy ingress), the same settings "
        f"except auth: 'none', and 'oidc' trusting a real OIDC issuer on loopback (testkit.oidc_issuer: discovery + "
        f"JWKS over HTTP). Same data in both by STOW-RS (dcm_qa_nih's 8-instance MR study, the 512x512 CT "
        f"uncompressed and JPEG 2000, a 10-frame MR), study workflows finished first. Modes: '{BASELINE}' (auth off, "
        f"no token), '{HEADER_ONLY}' (auth off, the RS256 token sent and ignored: what the header alone costs), "
        f"'{RS256}' and '{ES256}' (auth on). One keep-alive requests.Session per mode; every request sends x-tenant; "
        f"frames asked as stored (transfer-syntax=*); '{FLOOR}' is the control: no token check in any mode, so it "
        f"shows how far the two stacks differ by themselves. {WARMUP} warm-up rounds, then {SAMPLES} rounds; each "
        f"round one request per workload and mode, the modes in a fresh random order each time. Milliseconds, client-observed, body "
        f"read. '- none' = this mode's median (or p90) minus none's; 95% interval by bootstrap. Target: oidc - none "
        f"<= +{TARGET_MS:g} ms at the median on every DICOMweb workload. Overall: {overall_md}. Issuer hits "
        f"(discovery/JWKS) after warm-up, through the latency rounds and the CPU blocks: {during.get('discovery', '?')}/{during.get('jwks', '?')}. "
        f"dicomflow code: {code_version()}. Whole run {minutes:.0f} min."
    )
    document = {
        "date": stamp[:10],
        "machine": machine(),
        "code": code_version(),
        "note": SHARED_MACHINE,
        "samples_per_workload_and_mode": SAMPLES,
        "warmup_rounds": WARMUP,
        "target_ms": TARGET_MS,
        "minutes": round(minutes, 1),
        "description": header,
        "issuer_hits": bench.hits,
        "issuer_hits_during_measured_rounds": during,
        "verify_in_process_us_median": bench.verify_us,
        "checks": bench.checks,
        "failed": failed,
        "overall": summary,
        "results": results,
        "replica_cpu_blocks": CPU_BLOCKS,
        "replica_cpu_block_requests": CPU_BLOCK_REQUESTS,
        "replica_cpu_ms_per_request": cpu,
    }
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(document, indent=2))
    body = table(results) if results else "(no samples)"
    verify_rows = ["| token | " + " | ".join(next(iter(bench.verify_us.values()), {})) + " |"] if bench.verify_us else []
    if verify_rows:
        verify_rows.append("|---" * (1 + len(next(iter(bench.verify_us.values())))) + "|")
        verify_rows += [
            f"| {alg} | " + " | ".join(f"{v:.0f}" for v in parts.values()) + " |" for alg, parts in bench.verify_us.items()
        ]
    verify_md = (
        (
            "\n\nIn-process token check, the archive's own code, keys from the stack's Redis (median microseconds "
            f"of {VERIFY_CALLS} calls, {VERIFY_CALLS // 4} with other work between):\n\n" + "\n".join(verify_rows)
        )
        if verify_rows
        else ""
    )
    cpu_md = (
        (
            f"\n\nServe replica CPU per request (ms; all its threads, idle CPU subtracted; median of {CPU_BLOCKS} blocks of "
            f"{CPU_BLOCK_REQUESTS} requests per workload and mode, modes in random order):\n\n"
            + cpu_table(cpu, [m.name for m in bench.modes])
        )
        if cpu
        else ""
    )
    hits_md = "\n".join(f"- {phase}: {json.dumps(hits)}" for phase, hits in bench.hits.items())
    checks_md = "\n".join(f"- {key}: {json.dumps(value)}" for key, value in bench.checks.items())
    failed_md = f"\n\nFailed parts (see the run's output): {', '.join(failed)}" if failed else ""
    (RESULTS / f"{stamp}.md").write_text(
        f"{header}\n\n{body}{cpu_md}{verify_md}\n\nIssuer hits (cumulative):\n{hits_md}\n\nChecks:\n{checks_md}{failed_md}\n"
    )
    print(body + cpu_md)
    print(f"issuer hits after warm-up (latency rounds and CPU blocks): {during}")
    return out


def main() -> int:
    os.environ["DICOMFLOW_ENV"] = "test"
    for key in [k for k in os.environ if k.startswith("DICOMFLOW_") and k != "DICOMFLOW_ENV"]:
        del os.environ[key]  # only the overrides below shape the stacks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the stacks are stopped
    failed: list[str] = []
    started = time.monotonic()
    print(f"bench.auth_latency: {SAMPLES} rounds after {WARMUP} warm-up rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="dicomflow-bench-auth-") as tmp:
        bench = AuthLatency(Path(tmp))
        try:
            for name, step in (
                ("start", bench.start),
                ("load", bench.load),
                ("measure", bench.measure),
                ("replica-cpu", bench.replica_cpu),
                ("verify-in-process", bench.verify_in_process),
            ):
                try:
                    step()
                except Exception:
                    traceback.print_exc()
                    failed.append(name)
                    if name not in ("replica-cpu", "verify-in-process"):
                        break
        finally:
            bench.checks["load average (1/5/15 min) at end"] = [round(v, 2) for v in os.getloadavg()]
            bench.stop()
        out = report(bench, failed, (time.monotonic() - started) / 60)
    print(f"bench.auth_latency: wrote {out}")
    during = measured_hits(bench.hits)
    if failed:
        print(f"bench.auth_latency: these parts failed (see the traceback above): {', '.join(failed)}")
    if any(during.get(kind) for kind in ("discovery", "jwks")):
        print(f"bench.auth_latency: the issuer was asked for its keys during the measured rounds: {during}")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
