"""The one typed settings object.

Precedence, highest first: keyword arguments, `DICOMFLOW_*` environment variables, the TOML file
of the environment (`config/{DICOMFLOW_ENV}.toml`, or the file named by `DICOMFLOW_CONFIG`),
then the defaults below. An endpoint left unset means "start the embedded one".
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource
from pydantic_settings import SettingsError as PydanticSettingsError

from archive.config.embedded_secrets import DEIDENTIFY, OIDC_CACHE, POSTGRES_APP, REDIS, read_secret
from archive.config.settings_env import EnvSettingError, LenientEnvSource
from archive.identity.tenants import check_tenant
from archive.lifecycle.rules import LifecycleRule
from archive.pixels.limits import INTERPRETER_BYTES, DecodeLimits, Limits
from archive.routing.admission import destination_refusal
from archive.routing.rules import ForwardRule

ENV_PREFIX = "DICOMFLOW_"
EMBEDDED_OWNER_ROLE = "dicomflow"
EMBEDDED_APP_ROLE = "dicomflow_app"
# the embedded servers listen on loopback whatever bind_host is (PostgreSQL and Redis from the
# wheels have no TLS, the Temporal dev server no authentication); other hosts' nodes reach them
# through mutual-TLS node links (cluster/node_link.py)
EMBEDDED_HOST = "127.0.0.1"
EMBEDDED_TEMPORAL_HOST = EMBEDDED_HOST
TEMPORAL_UI_PATH = "/temporal"  # the UI's public path, the same on loopback and through DICOMweb's origin
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
# decoding one frame holds the codec's working buffer (openjpeg keeps 32-bit samples: twice a
# 16-bit frame) and the decoded frame, and rendering adds its 8-bit image: measured 3x the decoded
# bytes at peak for a 16-bit J2K frame
DECODE_FRAME_FACTOR = 4


DimseService = Literal["store", "commit", "find", "move", "get", "worklist", "mpps"]
ALL_DIMSE_SERVICES: tuple[DimseService, ...] = ("store", "commit", "find", "move", "get", "worklist", "mpps")
NodeRole = Literal["dimse", "web", "worker"]
ALL_NODE_ROLES: tuple[NodeRole, ...] = ("dimse", "web", "worker")
MODALITY_SERVICES: tuple[DimseService, ...] = ("store", "commit")
JwsAlgorithm = Literal["RS256", "ES256", "RS384", "ES384", "RS512", "PS256"]
DEFAULT_JWS_ALGORITHMS: tuple[JwsAlgorithm, ...] = ("RS256", "ES256")


class AEEntry(BaseModel):
    """A remote application entity: where to reach it, which tenant its objects belong to, and
    what it may do when it calls us."""

    model_config = {"extra": "forbid"}

    host: str | None = None  # where N-EVENT-REPORTs (and later C-MOVE results) go
    port: int | None = Field(None, ge=1, le=65535)
    tenant: str | None = None
    # addresses (IP or CIDR) it may call from; None = any address
    allowed_hosts: list[str] | None = None
    # the DIMSE services it may use (C-ECHO is always answered); a modality stores and asks for commitment
    services: list[DimseService] = Field(default_factory=lambda: list(MODALITY_SERVICES))
    # when it calls on the DICOM TLS port: the client certificate it must present, by subject CN or
    # SHA-256 fingerprint (hex, colons allowed); another certificate, or none, is refused
    tls_certificate: str | None = Field(None, min_length=1)
    # associations we open to it (C-MOVE destination, N-EVENT-REPORT) use DICOM TLS (needs tls_ca_file)
    tls: bool = False

    @field_validator("allowed_hosts")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    @property
    def reachable(self) -> bool:
        return bool(self.host and self.port)


class HL7Sender(BaseModel):
    """A system that sends HL7 v2 ADT messages (a patient administration system, an interface
    engine), known by its sending facility (MSH-4): its messages apply to one tenant, and it may
    connect only from these addresses (IP or CIDR)."""

    model_config = {"extra": "forbid"}

    tenant: str
    allowed_hosts: list[str] = Field(min_length=1)

    @field_validator("allowed_hosts")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    def allows(self, address: str) -> bool:
        try:
            peer = ipaddress.ip_address(address.removeprefix("::ffff:"))
        except ValueError:
            return False
        return any(peer in ipaddress.ip_network(net, strict=False) for net in self.allowed_hosts)


class SettingsError(ValueError):
    """A setting has a bad value; the message names the key to fix."""


def is_loopback(address: str) -> bool:
    """An address (or the name localhost) that only this host can reach."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def config_file() -> Path:
    explicit = os.environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        return Path(explicit)
    return CONFIG_DIR / f"{os.environ.get(ENV_PREFIX + 'ENV', 'local')}.toml"


Port = int


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    env: str = "local"
    var_dir: Path = Path("var")
    bind_host: str = "127.0.0.1"
    default_tenant: str = "default"

    # endpoints: None means "start the embedded server"
    postgres_dsn: str | None = None  # the role every dicomflow process uses
    # the role that owns the schema and runs migrations; when it differs from postgres_dsn's role,
    # that role is granted what it needs and no UPDATE/DELETE/TRUNCATE on the audit trail
    postgres_owner_dsn: str | None = None
    # unused since the embedded PostgreSQL listens on loopback only (other hosts' nodes come through
    # node links, cluster/node_link.py); kept so a settings file that names it still loads
    postgres_client_networks: list[str] = Field(default_factory=list)
    redis_url: str | None = None
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_task_queue: str = "dicomflow"
    # the embedded Temporal's SQLite: "normal" (WAL, fsync at checkpoints) survives any process
    # crash and is ~3x faster; "full" also survives power loss. Instances are durable in PostgreSQL
    # and on disk either way; the reconciler re-drives studies whose workflow state was lost.
    temporal_sqlite_sync: Literal["normal", "full"] = "normal"
    ray_address: str | None = None
    s3_endpoint: str | None = None
    s3_bucket: str = "dicomflow"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_secure: bool = False
    s3_region: str | None = None
    # the cold tier lifecycle rules with action = "tier" move old studies to (archive/blobstore/tiered.py):
    # a directory (another disk, a NAS mount) or a second S3 bucket, perhaps at another endpoint
    cold_blob_dir: Path | None = None
    cold_s3_endpoint: str | None = None
    cold_s3_bucket: str = "dicomflow-cold"
    cold_s3_access_key: str | None = None
    cold_s3_secret_key: str | None = None
    cold_s3_secure: bool = False
    cold_s3_region: str | None = None

    # ports of the embedded servers and of dicomflow itself
    postgres_port: Port = Field(15432, ge=1, le=65535)
    redis_port: Port = Field(16379, ge=1, le=65535)
    temporal_port: Port = Field(7233, ge=1, le=65535)
    temporal_ui_port: Port = Field(8233, ge=1, le=65535)
    ray_dashboard_port: Port = Field(8265, ge=1, le=65535)
    http_port: Port = Field(8000, ge=1, le=65535)
    dimse_port: Port = Field(11112, ge=1, le=65535)
    # HAProxy ingress (serve_ingress = "haproxy"): its stats page and Prometheus metrics
    haproxy_stats_port: Port = Field(8404, ge=1, le=65535)
    haproxy_metrics_port: Port = Field(9101, ge=1, le=65535)

    # DIMSE
    ae_title: str = Field("DICOMFLOW", min_length=1, max_length=16)
    # DICOM TLS (PS3.15 B, BCP 195) on its own port, when a certificate and key are set
    dimse_tls_port: Port = Field(2762, ge=1, le=65535)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None  # the CA client certificates must chain to
    tls_require_client_cert: bool = True
    # DICOMweb over HTTPS on http_port, with the same certificate and key (BCP 195 profiles: TLS 1.2+)
    https: bool = False
    ae_table: dict[str, AEEntry] = Field(default_factory=dict)
    # forwarding rules (archive/routing/rules.py): each matching study is sent to an AE-table entry by a
    # workflow `forward:{tenant}:{rule}:{StudyInstanceUID}`; in the environment as a JSON list
    forward_rules: list[ForwardRule] = Field(default_factory=list)
    # the key de-identified forwards derive their new UIDs with; None = var/secrets/deidentify_key, made by up
    deidentify_key: str | None = Field(None, min_length=16)
    scp_processes: int = Field(1, ge=1, le=64)  # per node with the dimse role

    # the cluster: roles of the node `up` starts (Ray custom resources), workflow worker actors
    # spread over the nodes with the worker role, and whether var_dir's blobs are on storage every
    # node mounts (else a second node needs s3_endpoint)
    node_roles: list[NodeRole] = Field(default_factory=lambda: list(ALL_NODE_ROLES))
    workflow_workers: int = Field(1, ge=0, le=256)
    blob_dir_shared: bool = False
    dimse_max_pdu: int = Field(1_048_576, ge=0)
    # what one listening SCP process gives out: associations in all, to one peer address (a
    # misbehaving or hostile host cannot hold every slot), and how long one may sit silent
    dimse_max_associations: int = Field(64, ge=1)
    dimse_max_associations_per_peer: int = Field(16, ge=1)
    dimse_idle_seconds: float = Field(60.0, gt=0)
    # before any association: TCP connections one peer address may hold open at once (refused at
    # accept, before TLS and the AE table; keep it above dimse_max_associations_per_peer), and how long
    # a new connection may take for its TLS handshake and for its A-ASSOCIATE-RQ to arrive
    dimse_max_connections_per_peer: int = Field(32, ge=1)
    dimse_acse_timeout_seconds: float = Field(10.0, gt=0)

    # ingest
    stable_seconds: float = Field(5.0, ge=0)
    duplicate_policy: Literal["reject", "replace"] = "reject"
    stow_max_bytes: int = Field(4 * 1024**3, ge=1)
    stow_max_parts: int = Field(10_000, ge=1)  # instances in one STOW-RS request
    retrieve_retention_days: float = Field(7.0, gt=0)  # finished C-MOVE records (per-instance rows) kept this long
    # blobs no index row names are removed once older than this (a receipt in flight writes its
    # blob before its row commits), by `dicomflow sweep` and every sweep_interval_seconds (0: never)
    orphan_grace_seconds: float = Field(3600.0, ge=60)
    sweep_interval_seconds: float = Field(86400.0, ge=0)
    # HL7 v2 ADT over MLLP (patient updates, merges, new identifiers): off until hl7_senders names a
    # sender (by its sending facility, MSH-4); MLLP over TLS (the tls_* files, client certificates
    # required) when hl7_tls
    hl7_port: Port = Field(2575, ge=1, le=65535)
    hl7_senders: dict[str, HL7Sender] = Field(default_factory=dict)
    hl7_tls: bool = False
    hl7_max_message_bytes: int = Field(1024 * 1024, ge=1024)
    # storage lifecycle (archive/lifecycle): rules applied by the Temporal Schedule "lifecycle" every
    # lifecycle_interval_seconds, at most lifecycle_concurrency studies at a time
    lifecycle_rules: list[LifecycleRule] = Field(default_factory=list)
    lifecycle_interval_seconds: float = Field(86400.0, ge=60)
    lifecycle_concurrency: int = Field(2, ge=1, le=16)
    # `dicomflow migrate` (issue 33): C-MOVEs to a legacy source at once, across every worker (a legacy
    # PACS is fragile); a migration's --concurrency may ask for fewer or more
    migrate_concurrency: int = Field(2, ge=1, le=32)
    # tenant -> bytes it may store (as stored); past it C-STORE gets A700 and STOW-RS 413, with the reason
    quota_bytes: dict[str, int] = Field(default_factory=dict)
    # IOCM: what a rejection note withdrew stays restorable this long; then the rejection expiry
    # workflow (a Temporal Schedule, every rejection_expiry_interval_seconds) deletes it. A note
    # coded 113039 (Data Retention Policy Expired) is deleted at once.
    rejected_retention_days: float = Field(30.0, ge=0)
    rejection_expiry_interval_seconds: float = Field(3600.0, ge=60)
    # lenient: keep objects whose UIDs break PS3.5 harmlessly (marked on the row); strict: refuse them
    uid_policy: Literal["lenient", "strict"] = "lenient"
    # what one object may make the archive decode or inflate (see archive/pixels/limits.py)
    max_frame_bytes: int = Field(Limits.max_frame_bytes, ge=1)
    max_pixel_bytes: int = Field(Limits.max_pixel_bytes, ge=1)
    max_inflated_bytes: int = Field(Limits.max_inflated_bytes, ge=1)
    # every pixel decode (rendered, thumbnails, decoded frames, decompression, transcoding) runs in
    # a pool of worker processes per process that asks (archive/pixels/decode_pool.py), each under
    # RLIMIT_AS = decode_memory_bytes; None = the interpreter's margin + DECODE_FRAME_FACTOR x max_frame_bytes
    decode_memory_bytes: int | None = Field(None, ge=256 * 2**20)
    # per call, or per frame where a call decodes many; lossless JPEG 2000 decodes at ~20-27 MB/s
    # on this 2-core machine, so a 1 GiB frame (max_frame_bytes) takes ~40-50 s
    decode_timeout_seconds: float = Field(60.0, gt=0)
    decode_workers: int = Field(2, ge=1, le=64)
    # a replica waits for its decode pool on threads of its own (serve/decode_gate.py), so slow
    # renders cannot take the threads every other request needs; a tenant holds at most
    # decode_tenant_threads of them, and a request over that share waits up to
    # decode_queue_seconds for one, then gets 503 with Retry-After
    decode_threads: int = Field(16, ge=1, le=256)
    decode_tenant_threads: int = Field(4, ge=1, le=256)
    decode_queue_seconds: float = Field(10.0, ge=0)
    commitment_timeout_seconds: float = Field(3600.0, gt=0)
    # a reference the archive has no record of is reported failed (0112) this long after the N-ACTION
    commitment_unknown_grace_seconds: float = Field(10.0, ge=0)
    # keep: store as received; uncompressed: also keep an Explicit VR Little Endian copy of
    # compressed objects (the original is always kept)
    transcode_policy: Literal["keep", "uncompressed"] = "keep"

    # Ray Serve
    # replicas of the DICOMweb deployment: serve_replicas fixed, or with serve_max_replicas set,
    # Ray Serve autoscaling between the two, aiming at serve_target_ongoing_requests per replica
    serve_replicas: int = Field(1, ge=1, le=256)
    serve_max_replicas: int | None = Field(None, ge=1, le=256)
    serve_target_ongoing_requests: float = Field(4.0, gt=0)
    serve_max_ongoing_requests: int = Field(100, ge=1)
    # haproxy: Ray Serve's HAProxy ingress forwards HTTP straight to the replicas (~1 ms a request);
    # proxy: Ray's Python proxy actor (~5-8 ms a request, no extra process)
    serve_ingress: Literal["haproxy", "proxy"] = "haproxy"
    # a study with instances still unprocessed this long after receipt is signalled again
    stalled_study_seconds: float = Field(600.0, gt=0)

    # the root URL clients reach us by, for RetrieveURL and BulkDataURI (e.g. behind a proxy)
    public_base_url: str | None = None
    # browsers (OHIF) on another origin: allowed origins for CORS; empty list turns CORS off
    # None = every origin while auth is "none", none at all with auth on
    cors_allow_origins: list[str] | None = None

    # Redis cache
    cache_ttl_seconds: int = Field(3600, ge=1)

    # identity: "none" trusts every caller on a loopback-only archive; "oidc" wants a bearer token
    auth: Literal["none", "oidc"] = "none"
    oidc_issuer: list[str] = Field(default_factory=list)  # one issuer URL or several
    oidc_audience: str | None = None
    oidc_tenant_claim: str = "dicomflow_tenants"  # a dotted path reaches nested claims
    oidc_role_claim: str = "dicomflow_roles"  # e.g. "realm_access.roles" for Keycloak
    oidc_algorithms: list[JwsAlgorithm] = Field(default_factory=lambda: list(DEFAULT_JWS_ALGORITHMS))
    oidc_jwks_ttl_seconds: int = Field(3600, ge=10)
    # an unknown key id refetches the issuer's keys at most this often (bogus kids cannot hammer it)
    oidc_refetch_seconds: float = Field(30.0, ge=1)
    oidc_clock_skew_seconds: int = Field(30, ge=0, le=300)
    # the HMAC key that protects the issuers' keys cached in Redis; None = var/secrets/oidc_cache_key,
    # made by `dicomflow up` (a node on another host gets the head's)
    oidc_cache_key: str | None = Field(None, min_length=16)
    # unknown calling AE titles: None = accepted only while auth is "none"
    dimse_accept_unknown_ae: bool | None = None

    @field_validator("ae_title")
    @classmethod
    def _ae_title_chars(cls, value: str) -> str:
        if not value.isascii() or "\\" in value or not value.strip():
            raise ValueError("AE titles are 1-16 ASCII characters without backslash")
        return value.strip()

    @field_validator("oidc_issuer", mode="before")
    @classmethod
    def _one_or_many_issuers(cls, value: object) -> object:
        if isinstance(value, str):
            return [value] if not value.lstrip().startswith("[") else value
        return value

    @model_validator(mode="after")
    def _https_needs_a_certificate(self) -> "Settings":
        if self.https and not self.dimse_tls:
            raise ValueError("https = true needs tls_cert_file and tls_key_file (make them with `dicomflow certs issue NAME`)")
        if self.hl7_tls and not (self.dimse_tls and self.tls_ca_file):
            raise ValueError("hl7_tls = true needs tls_cert_file, tls_key_file and tls_ca_file (senders present certificates)")
        for facility, sender in self.hl7_senders.items():
            check_tenant(sender.tenant)  # a bad name would only fail at the first message
            if not facility or len(facility) > 64:
                raise ValueError(f"hl7_senders: {facility!r} is not a sending facility (MSH-4, 1-64 characters)")
        return self

    @model_validator(mode="after")
    def _lifecycle_rule_names_unique(self) -> "Settings":
        names = [rule.name for rule in self.lifecycle_rules]
        if len(names) != len(set(names)):
            raise ValueError(f"lifecycle_rules: two rules share a name ({sorted(n for n in names if names.count(n) > 1)[0]})")
        tiering = [rule.name for rule in self.lifecycle_rules if rule.action == "tier"]
        if tiering and self.cold_backend is None:
            raise ValueError(
                f"lifecycle rule {tiering[0]!r} tiers studies to a cold store: set cold_blob_dir (a directory)"
                " or cold_s3_endpoint and cold_s3_bucket"
            )
        if self.cold_blob_dir is not None and self.cold_s3_endpoint:
            raise ValueError("a cold store is either cold_blob_dir or cold_s3_endpoint, not both: remove one")
        return self

    @property
    def hl7_enabled(self) -> bool:
        return bool(self.hl7_senders)

    @model_validator(mode="after")
    def _replica_bounds_in_order(self) -> "Settings":
        if self.serve_max_replicas is not None and self.serve_max_replicas < self.serve_replicas:
            raise ValueError(
                f"serve_max_replicas ({self.serve_max_replicas}) is below serve_replicas ({self.serve_replicas}), "
                "the autoscaling minimum"
            )
        return self

    @model_validator(mode="after")
    def _forwarding_needs_reachable_destinations(self) -> "Settings":
        names = [rule.name for rule in self.forward_rules]
        if len(set(names)) != len(names):
            raise ValueError("forward_rules: two rules have the same name")
        for rule in self.forward_rules:
            refused = destination_refusal(rule, self.ae_table)  # the same check a rule added at run time passes
            if refused:
                raise ValueError(refused)
        return self

    @model_validator(mode="after")
    def _oidc_needs_issuer_and_audience(self) -> "Settings":
        if self.auth == "oidc" and not (self.oidc_issuer and self.oidc_audience):
            raise ValueError("auth = 'oidc' needs oidc_issuer (the IdP's issuer URL) and oidc_audience (this API's client id)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return init_settings, LenientEnvSource(settings_cls), toml

    # derived values -------------------------------------------------------------------------

    @property
    def var_path(self) -> Path:
        return self.var_dir.resolve()

    @property
    def blob_backend(self) -> Literal["local", "s3"]:
        return "s3" if self.s3_endpoint else "local"

    @property
    def cold_backend(self) -> Literal["local", "s3"] | None:
        """Where tiered studies go; None when no cold store is configured."""
        return "s3" if self.cold_s3_endpoint else "local" if self.cold_blob_dir is not None else None

    @property
    def limits(self) -> Limits:
        return Limits(self.max_frame_bytes, self.max_pixel_bytes, self.max_inflated_bytes)

    @property
    def decode_limits(self) -> DecodeLimits:
        memory = self.decode_memory_bytes or INTERPRETER_BYTES + DECODE_FRAME_FACTOR * self.max_frame_bytes
        return DecodeLimits(memory, self.decode_timeout_seconds, self.decode_workers)

    @property
    def bind_is_loopback(self) -> bool:
        return is_loopback(self.bind_host)

    @property
    def ingress(self) -> Literal["haproxy", "proxy"]:
        """The ingress that can run with these settings. Ray's HAProxy health-checks replicas on
        127.0.0.1 while they listen on the HTTP host, so with a non-loopback bind_host it would
        never become ready; Serve's own proxy listens on bind_host itself."""
        return self.serve_ingress if self.bind_is_loopback else "proxy"

    @property
    def dicomweb_origin(self) -> str:
        """Scheme, host and port of DICOMweb as a client on this node reaches it."""
        return f"{'https' if self.https else 'http'}://{self.bind_host}:{self.http_port}"

    def effective_postgres_dsn(self) -> str:
        """The application's role: every process of the archive connects with it."""
        if self.postgres_dsn:
            return self.postgres_dsn
        return self._embedded_dsn(EMBEDDED_APP_ROLE, POSTGRES_APP)

    def effective_postgres_owner_dsn(self) -> str:
        """The schema owner's role: only `dicomflow up` (migrations, grants) connects with it. The
        embedded server's owner has no password outside `up` (cluster/services/postgres.py)."""
        if self.postgres_dsn:
            return self.postgres_owner_dsn or self.postgres_dsn
        return self._embedded_dsn(EMBEDDED_OWNER_ROLE, None)

    def _embedded_dsn(self, role: str, secret: str | None) -> str:
        password = read_secret(self.var_path, secret) if secret else None
        user = f"{role}:{password}" if password else role
        return f"postgresql://{user}@{EMBEDDED_HOST}:{self.postgres_port}/dicomflow"

    def effective_redis_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        password = read_secret(self.var_path, REDIS)
        return f"redis://{':' + password + '@' if password else ''}{EMBEDDED_HOST}:{self.redis_port}/0"

    @property
    def embedded_temporal_ui_url(self) -> str:
        """The embedded Temporal Web UI on this host's loopback, where no identity is checked."""
        return f"http://{EMBEDDED_TEMPORAL_HOST}:{self.temporal_ui_port}{TEMPORAL_UI_PATH}/"

    def effective_deidentify_key(self) -> str | None:
        return self.deidentify_key or read_secret(self.var_path, DEIDENTIFY)

    def effective_oidc_cache_key(self) -> str | None:
        return self.oidc_cache_key or read_secret(self.var_path, OIDC_CACHE)

    def effective_temporal_address(self) -> str:
        return self.temporal_address or f"{EMBEDDED_TEMPORAL_HOST}:{self.temporal_port}"

    @property
    def dimse_tls(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def accepts_unknown_ae(self) -> bool:
        if self.dimse_accept_unknown_ae is None:
            return self.auth == "none"
        return self.dimse_accept_unknown_ae

    @property
    def effective_cors_origins(self) -> list[str]:
        if self.cors_allow_origins is None:
            return ["*"] if self.auth == "none" else []
        return self.cors_allow_origins

    def tenant_for_ae(self, calling_ae: str, called_ae: str) -> str:
        """The called AE title selects a tenant when it is in the AE table, else the caller's entry does."""
        for ae in (called_ae.strip(), calling_ae.strip()):
            entry = self.ae_table.get(ae)
            if entry and entry.tenant:
                return entry.tenant
        return self.default_tenant

    def exposure_problem(self) -> str | None:
        """Why these settings must not start: an archive without identity reachable off this host."""
        if self.auth != "none" or self.bind_is_loopback:
            return None
        return (
            f"auth = 'none' trusts every caller, so it only listens on loopback, but bind_host is {self.bind_host!r}. "
            "Set auth = 'oidc' with oidc_issuer and oidc_audience (DICOMFLOW_AUTH, DICOMFLOW_OIDC_ISSUER, "
            "DICOMFLOW_OIDC_AUDIENCE), or bind_host = '127.0.0.1'."
        )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning a validation error into one message per bad key."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "?"
            env_name = ENV_PREFIX + str(e["loc"][0]).upper() if e["loc"] else "?"
            problems.append(f"setting '{key}' ({env_name}): {e['msg']} (got {e.get('input')!r})")
        raise SettingsError("bad settings, fix these and start again:\n  " + "\n  ".join(problems)) from None
    except PydanticSettingsError as err:  # a source could not read a value; the env source says why
        reason = err.__cause__ if isinstance(err.__cause__, EnvSettingError) else err
        raise SettingsError(f"bad settings, fix this and start again:\n  {reason}") from None
    except ValueError as err:  # e.g. a TOML syntax error
        raise SettingsError(f"cannot read settings from {config_file()}: {err}") from None
