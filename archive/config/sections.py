"""The settings in sections: each part of the archive takes the one section it needs.

A field's alias is its flat key, the name a settings file and a `DICOMFLOW_*` variable use
(`dimse_port` is `dimse.port`); a field without one keeps its flat name inside the section
(`ae_title` is `dimse.ae_title`). archive/config/flat_keys.py turns flat keys into sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from archive.config.peers import AEEntry, HL7Sender
from archive.identity.tenants import check_tenant
from archive.lifecycle.rules import LifecycleRule
from archive.pixels.limits import INTERPRETER_BYTES, DecodeLimits, Limits
from archive.routing.rules import ForwardRule

Port = int
NodeRole = Literal["dimse", "web", "worker"]
ALL_NODE_ROLES: tuple[NodeRole, ...] = ("dimse", "web", "worker")
JwsAlgorithm = Literal["RS256", "ES256", "RS384", "ES384", "RS512", "PS256"]
DEFAULT_JWS_ALGORITHMS: tuple[JwsAlgorithm, ...] = ("RS256", "ES256")
# decoding one frame holds the codec's working buffer (openjpeg keeps 32-bit samples: twice a
# 16-bit frame) and the decoded frame, and rendering adds its 8-bit image: measured 3x the decoded
# bytes at peak for a 16-bit J2K frame
DECODE_FRAME_FACTOR = 4


def _port(default: int, alias: str | None = None) -> Port:
    return Field(default, ge=1, le=65535, alias=alias)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class IndexSettings(Section):
    """PostgreSQL; dsn None means "start the embedded server"."""

    dsn: str | None = Field(None, alias="postgres_dsn")  # the role every dicomflow process uses
    # the role that owns the schema and runs migrations; when it differs from dsn's role, that role
    # is granted what it needs and no UPDATE/DELETE/TRUNCATE on the audit trail
    owner_dsn: str | None = Field(None, alias="postgres_owner_dsn")
    # unused since the embedded PostgreSQL listens on loopback only (other hosts' nodes come through
    # node links, cluster/node_link.py); kept so a settings file that names it still loads
    client_networks: list[str] = Field(default_factory=list, alias="postgres_client_networks")
    port: Port = _port(15432, "postgres_port")


class CacheSettings(Section):
    """Redis; url None means "start the embedded server"."""

    url: str | None = Field(None, alias="redis_url")
    port: Port = _port(16379, "redis_port")
    ttl_seconds: int = Field(3600, ge=1, alias="cache_ttl_seconds")


class TemporalSettings(Section):
    """Temporal; address None means "start the embedded dev server" (with its Web UI)."""

    address: str | None = Field(None, alias="temporal_address")
    namespace: str = Field("default", alias="temporal_namespace")
    task_queue: str = Field("dicomflow", alias="temporal_task_queue")
    # the embedded Temporal's SQLite: "normal" (WAL, fsync at checkpoints) survives any process
    # crash and is ~3x faster; "full" also survives power loss. Instances are durable in PostgreSQL
    # and on disk either way; the reconciler re-drives studies whose workflow state was lost.
    sqlite_sync: Literal["normal", "full"] = Field("normal", alias="temporal_sqlite_sync")
    port: Port = _port(7233, "temporal_port")
    ui_port: Port = _port(8233, "temporal_ui_port")


class StorageSettings(Section):
    """Where blobs live: var_dir/blobs, or an S3 bucket; and the cold tier lifecycle rules with
    action = "tier" move old studies to (archive/blobstore/tiered.py): a directory (another disk, a
    NAS mount) or a second S3 bucket, perhaps at another endpoint."""

    s3_endpoint: str | None = None
    s3_bucket: str = "dicomflow"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_secure: bool = False
    s3_region: str | None = None
    cold_blob_dir: Path | None = None
    cold_s3_endpoint: str | None = None
    cold_s3_bucket: str = "dicomflow-cold"
    cold_s3_access_key: str | None = None
    cold_s3_secret_key: str | None = None
    cold_s3_secure: bool = False
    cold_s3_region: str | None = None
    # keep: store as received; uncompressed: also keep an Explicit VR Little Endian copy of
    # compressed objects (the original is always kept)
    transcode_policy: Literal["keep", "uncompressed"] = "keep"

    @model_validator(mode="after")
    def _one_cold_store(self) -> "StorageSettings":
        if self.cold_blob_dir is not None and self.cold_s3_endpoint:
            raise ValueError("a cold store is either cold_blob_dir or cold_s3_endpoint, not both: remove one")
        return self

    @property
    def backend(self) -> Literal["local", "s3"]:
        return "s3" if self.s3_endpoint else "local"

    @property
    def cold_backend(self) -> Literal["local", "s3"] | None:
        """Where tiered studies go; None when no cold store is configured."""
        return "s3" if self.cold_s3_endpoint else "local" if self.cold_blob_dir is not None else None


class TlsSettings(Section):
    """The archive's certificate (`dicomflow certs`): DICOM TLS on its own port (PS3.15 B, BCP 195)
    when a certificate and key are set, DICOMweb over HTTPS, HL7 over TLS, node links."""

    cert_file: Path | None = Field(None, alias="tls_cert_file")
    key_file: Path | None = Field(None, alias="tls_key_file")
    ca_file: Path | None = Field(None, alias="tls_ca_file")  # the CA client certificates must chain to
    require_client_cert: bool = Field(True, alias="tls_require_client_cert")

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None and self.key_file is not None


class DimseSettings(Section):
    """The DIMSE listeners, the AE table, and what one listening SCP process gives out."""

    ae_title: str = Field("DICOMFLOW", min_length=1, max_length=16)
    port: Port = _port(11112, "dimse_port")
    tls_port: Port = _port(2762, "dimse_tls_port")
    ae_table: dict[str, AEEntry] = Field(default_factory=dict)
    max_pdu: int = Field(1_048_576, ge=0, alias="dimse_max_pdu")
    # associations in all, to one peer address (a misbehaving or hostile host cannot hold every
    # slot), and how long one may sit silent
    max_associations: int = Field(64, ge=1, alias="dimse_max_associations")
    max_associations_per_peer: int = Field(16, ge=1, alias="dimse_max_associations_per_peer")
    idle_seconds: float = Field(60.0, gt=0, alias="dimse_idle_seconds")
    # before any association: TCP connections one peer address may hold open at once (refused at
    # accept, before TLS and the AE table; keep it above max_associations_per_peer), and how long
    # a new connection may take for its TLS handshake and for its A-ASSOCIATE-RQ to arrive
    max_connections_per_peer: int = Field(32, ge=1, alias="dimse_max_connections_per_peer")
    acse_timeout_seconds: float = Field(10.0, gt=0, alias="dimse_acse_timeout_seconds")
    # unknown calling AE titles: None = accepted only while auth is "none"
    accept_unknown_ae: bool | None = Field(None, alias="dimse_accept_unknown_ae")
    commitment_timeout_seconds: float = Field(3600.0, gt=0)
    # a reference the archive has no record of is reported failed (0112) this long after the N-ACTION
    commitment_unknown_grace_seconds: float = Field(10.0, ge=0)

    @field_validator("ae_title")
    @classmethod
    def _ae_title_chars(cls, value: str) -> str:
        if not value.isascii() or "\\" in value or not value.strip():
            raise ValueError("AE titles are 1-16 ASCII characters without backslash")
        return value.strip()


class WebSettings(Section):
    """DICOMweb: its port, HTTPS, the ingress and the Ray Serve replicas behind it."""

    http_port: Port = _port(8000)
    # DICOMweb over HTTPS on http_port, with the TLS certificate and key (BCP 195 profiles: TLS 1.2+)
    https: bool = False
    # the root URL clients reach us by, for RetrieveURL and BulkDataURI (e.g. behind a proxy)
    public_base_url: str | None = None
    # browsers (OHIF) on another origin: allowed origins for CORS; empty list turns CORS off
    # None = every origin while auth is "none", none at all with auth on
    cors_allow_origins: list[str] | None = None
    stow_max_bytes: int = Field(4 * 1024**3, ge=1)
    stow_max_parts: int = Field(10_000, ge=1)  # instances in one STOW-RS request
    # replicas of the DICOMweb deployment: serve_replicas fixed, or with serve_max_replicas set,
    # Ray Serve autoscaling between the two, aiming at serve_target_ongoing_requests per replica
    serve_replicas: int = Field(1, ge=1, le=256)
    serve_max_replicas: int | None = Field(None, ge=1, le=256)
    serve_target_ongoing_requests: float = Field(4.0, gt=0)
    serve_max_ongoing_requests: int = Field(100, ge=1)
    # haproxy: Ray Serve's HAProxy ingress forwards HTTP straight to the replicas (~1 ms a request);
    # proxy: Ray's Python proxy actor (~5-8 ms a request, no extra process)
    serve_ingress: Literal["haproxy", "proxy"] = "haproxy"
    # HAProxy ingress: its stats page and Prometheus metrics
    haproxy_stats_port: Port = _port(8404)
    haproxy_metrics_port: Port = _port(9101)

    @model_validator(mode="after")
    def _replica_bounds_in_order(self) -> "WebSettings":
        if self.serve_max_replicas is not None and self.serve_max_replicas < self.serve_replicas:
            raise ValueError(
                f"serve_max_replicas ({self.serve_max_replicas}) is below serve_replicas ({self.serve_replicas}), "
                "the autoscaling minimum"
            )
        return self


class OidcSettings(Section):
    """Bearer tokens from an OpenID Connect issuer (auth = "oidc")."""

    issuer: list[str] = Field(default_factory=list, alias="oidc_issuer")  # one issuer URL or several
    audience: str | None = Field(None, alias="oidc_audience")
    tenant_claim: str = Field("dicomflow_tenants", alias="oidc_tenant_claim")  # a dotted path reaches nested claims
    role_claim: str = Field("dicomflow_roles", alias="oidc_role_claim")  # e.g. "realm_access.roles" for Keycloak
    algorithms: list[JwsAlgorithm] = Field(default_factory=lambda: list(DEFAULT_JWS_ALGORITHMS), alias="oidc_algorithms")
    jwks_ttl_seconds: int = Field(3600, ge=10, alias="oidc_jwks_ttl_seconds")
    # an unknown key id refetches the issuer's keys at most this often (bogus kids cannot hammer it)
    refetch_seconds: float = Field(30.0, ge=1, alias="oidc_refetch_seconds")
    clock_skew_seconds: int = Field(30, ge=0, le=300, alias="oidc_clock_skew_seconds")
    # the HMAC key that protects the issuers' keys cached in Redis; None = var/secrets/oidc_cache_key,
    # made by `dicomflow up` (a node on another host gets the head's)
    cache_key: str | None = Field(None, min_length=16, alias="oidc_cache_key")

    @field_validator("issuer", mode="before")
    @classmethod
    def _one_or_many_issuers(cls, value: object) -> object:
        if isinstance(value, str):
            return [value] if not value.lstrip().startswith("[") else value
        return value


class DecodeSettings(Section):
    """What one object may make the archive decode or inflate (archive/pixels/limits.py), and the
    pool of processes every pixel decode runs in (archive/pixels/decode_pool.py)."""

    max_frame_bytes: int = Field(Limits.max_frame_bytes, ge=1)
    max_pixel_bytes: int = Field(Limits.max_pixel_bytes, ge=1)
    max_inflated_bytes: int = Field(Limits.max_inflated_bytes, ge=1)
    # each decode process runs under RLIMIT_AS = memory_bytes; None = the interpreter's margin +
    # DECODE_FRAME_FACTOR x max_frame_bytes
    memory_bytes: int | None = Field(None, ge=256 * 2**20, alias="decode_memory_bytes")
    # per call, or per frame where a call decodes many; lossless JPEG 2000 decodes at ~20-27 MB/s
    # on this 2-core machine, so a 1 GiB frame (max_frame_bytes) takes ~40-50 s
    timeout_seconds: float = Field(60.0, gt=0, alias="decode_timeout_seconds")
    workers: int = Field(2, ge=1, le=64, alias="decode_workers")
    # a replica waits for its decode pool on threads of its own (serve/decode_gate.py), so slow
    # renders cannot take the threads every other request needs; a tenant holds at most
    # tenant_threads of them, and a request over that share waits up to queue_seconds for one, then
    # gets 503 with Retry-After
    threads: int = Field(16, ge=1, le=256, alias="decode_threads")
    tenant_threads: int = Field(4, ge=1, le=256, alias="decode_tenant_threads")
    queue_seconds: float = Field(10.0, ge=0, alias="decode_queue_seconds")

    @property
    def limits(self) -> Limits:
        return Limits(self.max_frame_bytes, self.max_pixel_bytes, self.max_inflated_bytes)

    @property
    def pool_limits(self) -> DecodeLimits:
        memory = self.memory_bytes or INTERPRETER_BYTES + DECODE_FRAME_FACTOR * self.max_frame_bytes
        return DecodeLimits(memory, self.timeout_seconds, self.workers)


class IngestSettings(Section):
    """Receipt and the housekeeping around it."""

    stable_seconds: float = Field(5.0, ge=0)
    duplicate_policy: Literal["reject", "replace"] = "reject"
    # lenient: keep objects whose UIDs break PS3.5 harmlessly (marked on the row); strict: refuse them
    uid_policy: Literal["lenient", "strict"] = "lenient"
    retrieve_retention_days: float = Field(7.0, gt=0)  # finished C-MOVE records (per-instance rows) kept this long
    # blobs no index row names are removed once older than this (a receipt in flight writes its
    # blob before its row commits), by `dicomflow sweep` and every sweep_interval_seconds (0: never)
    orphan_grace_seconds: float = Field(3600.0, ge=60)
    sweep_interval_seconds: float = Field(86400.0, ge=0)
    # a study with instances still unprocessed this long after receipt is signalled again
    stalled_study_seconds: float = Field(600.0, gt=0)


class Hl7Settings(Section):
    """HL7 v2 ADT over MLLP (patient updates, merges, new identifiers): off until senders names a
    sender (by its sending facility, MSH-4); MLLP over TLS (the tls files, client certificates
    required) when tls."""

    port: Port = _port(2575, "hl7_port")
    senders: dict[str, HL7Sender] = Field(default_factory=dict, alias="hl7_senders")
    tls: bool = Field(False, alias="hl7_tls")
    max_message_bytes: int = Field(1024 * 1024, ge=1024, alias="hl7_max_message_bytes")

    @model_validator(mode="after")
    def _senders_named(self) -> "Hl7Settings":
        for facility, sender in self.senders.items():
            check_tenant(sender.tenant)  # a bad name would only fail at the first message
            if not facility or len(facility) > 64:
                raise ValueError(f"hl7_senders: {facility!r} is not a sending facility (MSH-4, 1-64 characters)")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.senders)


class LifecycleSettings(Section):
    """Storage lifecycle (archive/lifecycle): rules applied by the Temporal Schedule "lifecycle"
    every interval_seconds, concurrency studies at a time; quotas; and IOCM rejection expiry: what a
    rejection note withdrew stays restorable rejected_retention_days, then the rejection expiry
    Schedule deletes it (a note coded 113039, Data Retention Policy Expired, at once)."""

    rules: list[LifecycleRule] = Field(default_factory=list, alias="lifecycle_rules")
    interval_seconds: float = Field(86400.0, ge=60, alias="lifecycle_interval_seconds")
    concurrency: int = Field(2, ge=1, le=16, alias="lifecycle_concurrency")
    # tenant -> bytes it may store (as stored); past it C-STORE gets A700 and STOW-RS 413, with the reason
    quota_bytes: dict[str, int] = Field(default_factory=dict)
    rejected_retention_days: float = Field(30.0, ge=0)
    rejection_expiry_interval_seconds: float = Field(3600.0, ge=60)

    @model_validator(mode="after")
    def _rule_names_unique(self) -> "LifecycleSettings":
        names = [rule.name for rule in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"lifecycle_rules: two rules share a name ({sorted(n for n in names if names.count(n) > 1)[0]})")
        return self


class RoutingSettings(Section):
    """Forwarding rules (archive/routing/rules.py): each matching study is sent to an AE-table entry
    by a workflow `forward:{tenant}:{rule}:{StudyInstanceUID}`; in the environment as a JSON list."""

    forward_rules: list[ForwardRule] = Field(default_factory=list)
    # the key de-identified forwards derive their new UIDs with; None = var/secrets/deidentify_key, made by up
    deidentify_key: str | None = Field(None, min_length=16)

    @model_validator(mode="after")
    def _rule_names_unique(self) -> "RoutingSettings":
        names = [rule.name for rule in self.forward_rules]
        if len(set(names)) != len(names):
            raise ValueError("forward_rules: two rules have the same name")
        return self


class MigrationSettings(Section):
    """`dicomflow migrate`: C-MOVEs to a legacy source at once, across every worker (a legacy PACS is
    fragile); a migration's --concurrency may ask for fewer or more."""

    concurrency: int = Field(2, ge=1, le=32, alias="migrate_concurrency")


class ClusterSettings(Section):
    """The cluster: an existing Ray to join, the roles of the node `up` starts (Ray custom
    resources), listening processes and workflow workers per node, and whether var_dir's blobs are
    on storage every node mounts (else a second node needs s3_endpoint)."""

    ray_address: str | None = None
    ray_dashboard_port: Port = _port(8265)
    node_roles: list[NodeRole] = Field(default_factory=lambda: list(ALL_NODE_ROLES))
    scp_processes: int = Field(1, ge=1, le=64)  # per node with the dimse role
    workflow_workers: int = Field(1, ge=0, le=256)
    blob_dir_shared: bool = False
