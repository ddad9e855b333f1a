"""The one typed settings object, in sections.

Precedence, highest first: keyword arguments, `DICOMFLOW_*` environment variables, the TOML file
of the environment (`config/{DICOMFLOW_ENV}.toml`, or the file named by `DICOMFLOW_CONFIG`),
then the defaults in archive/config/sections.py. Every source uses the flat keys
(`dimse_port`, `DICOMFLOW_DIMSE_PORT`); the object holds them in sections (`settings.dimse.port`),
and each part of the archive takes the section it needs. An endpoint left unset means "start
the embedded one".
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource
from pydantic_settings import SettingsError as PydanticSettingsError

from archive.config.embedded_secrets import DEIDENTIFY, OIDC_CACHE, POSTGRES_APP, REDIS, read_secret
from archive.config.flat_keys import flat_keys, flat_name, nest
from archive.config.sections import (
    CacheSettings,
    ClusterSettings,
    DecodeSettings,
    DimseSettings,
    Hl7Settings,
    IndexSettings,
    IngestSettings,
    LifecycleSettings,
    MigrationSettings,
    OidcSettings,
    RoutingSettings,
    StorageSettings,
    TemporalSettings,
    TlsSettings,
    WebSettings,
)
from archive.config.settings_env import EnvSettingError, FlatEnvSource, NestedSource
from archive.routing.admission import destination_refusal

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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    env: str = "local"
    var_dir: Path = Path("var")
    bind_host: str = "127.0.0.1"
    default_tenant: str = "default"
    # identity: "none" trusts every caller on a loopback-only archive; "oidc" wants a bearer token
    auth: Literal["none", "oidc"] = "none"

    index: IndexSettings = Field(default_factory=IndexSettings.model_construct)
    cache: CacheSettings = Field(default_factory=CacheSettings.model_construct)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings.model_construct)
    storage: StorageSettings = Field(default_factory=StorageSettings.model_construct)
    tls: TlsSettings = Field(default_factory=TlsSettings.model_construct)
    dimse: DimseSettings = Field(default_factory=DimseSettings.model_construct)
    web: WebSettings = Field(default_factory=WebSettings.model_construct)
    oidc: OidcSettings = Field(default_factory=OidcSettings.model_construct)
    decode: DecodeSettings = Field(default_factory=DecodeSettings.model_construct)
    ingest: IngestSettings = Field(default_factory=IngestSettings.model_construct)
    hl7: Hl7Settings = Field(default_factory=Hl7Settings.model_construct)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings.model_construct)
    routing: RoutingSettings = Field(default_factory=RoutingSettings.model_construct)
    migration: MigrationSettings = Field(default_factory=MigrationSettings.model_construct)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings.model_construct)

    @model_validator(mode="before")
    @classmethod
    def _flat_keys_into_sections(cls, data: Any) -> Any:
        return nest(data, cls) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _tls_settings_need_a_certificate(self) -> "Settings":
        if self.web.https and not self.tls.enabled:
            raise ValueError("https = true needs tls_cert_file and tls_key_file (make them with `dicomflow certs issue NAME`)")
        if self.hl7.tls and not (self.tls.enabled and self.tls.ca_file):
            raise ValueError("hl7_tls = true needs tls_cert_file, tls_key_file and tls_ca_file (senders present certificates)")
        return self

    @model_validator(mode="after")
    def _tiering_needs_a_cold_store(self) -> "Settings":
        tiering = [rule.name for rule in self.lifecycle.rules if rule.action == "tier"]
        if tiering and self.storage.cold_backend is None:
            raise ValueError(
                f"lifecycle rule {tiering[0]!r} tiers studies to a cold store: set cold_blob_dir (a directory)"
                " or cold_s3_endpoint and cold_s3_bucket"
            )
        return self

    @model_validator(mode="after")
    def _forwarding_needs_reachable_destinations(self) -> "Settings":
        for rule in self.routing.forward_rules:
            refused = destination_refusal(rule, self.dimse.ae_table)  # the same check a rule added at run time passes
            if refused:
                raise ValueError(refused)
        return self

    @model_validator(mode="after")
    def _oidc_needs_issuer_and_audience(self) -> "Settings":
        if self.auth == "oidc" and not (self.oidc.issuer and self.oidc.audience):
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
        nested = NestedSource(settings_cls, init_settings), FlatEnvSource(settings_cls, ENV_PREFIX)
        return *nested, NestedSource(settings_cls, toml)

    def with_values(self, **values: Any) -> "Settings":
        """A copy with some flat keys changed, validated like a settings file."""
        return type(self).model_validate({**self.model_dump(), **values})

    # derived values -------------------------------------------------------------------------

    @property
    def var_path(self) -> Path:
        return self.var_dir.resolve()

    @property
    def bind_is_loopback(self) -> bool:
        return is_loopback(self.bind_host)

    @property
    def dicomweb_origin(self) -> str:
        """Scheme, host and port of DICOMweb as a client on this node reaches it."""
        return f"{'https' if self.web.https else 'http'}://{self.bind_host}:{self.web.http_port}"

    def effective_postgres_dsn(self) -> str:
        """The application's role: every process of the archive connects with it."""
        if self.index.dsn:
            return self.index.dsn
        return self._embedded_dsn(EMBEDDED_APP_ROLE, POSTGRES_APP)

    def effective_postgres_owner_dsn(self) -> str:
        """The schema owner's role: only `dicomflow up` (migrations, grants) connects with it. The
        embedded server's owner has no password outside `up` (cluster/services/postgres.py)."""
        if self.index.dsn:
            return self.index.owner_dsn or self.index.dsn
        return self._embedded_dsn(EMBEDDED_OWNER_ROLE, None)

    def _embedded_dsn(self, role: str, secret: str | None) -> str:
        password = read_secret(self.var_path, secret) if secret else None
        user = f"{role}:{password}" if password else role
        return f"postgresql://{user}@{EMBEDDED_HOST}:{self.index.port}/dicomflow"

    def effective_redis_url(self) -> str:
        if self.cache.url:
            return self.cache.url
        password = read_secret(self.var_path, REDIS)
        return f"redis://{':' + password + '@' if password else ''}{EMBEDDED_HOST}:{self.cache.port}/0"

    @property
    def embedded_temporal_ui_url(self) -> str:
        """The embedded Temporal Web UI on this host's loopback, where no identity is checked."""
        return f"http://{EMBEDDED_TEMPORAL_HOST}:{self.temporal.ui_port}{TEMPORAL_UI_PATH}/"

    def effective_deidentify_key(self) -> str | None:
        return self.routing.deidentify_key or read_secret(self.var_path, DEIDENTIFY)

    def effective_oidc_cache_key(self) -> str | None:
        return self.oidc.cache_key or read_secret(self.var_path, OIDC_CACHE)

    def effective_temporal_address(self) -> str:
        return self.temporal.address or f"{EMBEDDED_TEMPORAL_HOST}:{self.temporal.port}"

    @property
    def accepts_unknown_ae(self) -> bool:
        if self.dimse.accept_unknown_ae is None:
            return self.auth == "none"
        return self.dimse.accept_unknown_ae

    @property
    def effective_cors_origins(self) -> list[str]:
        if self.web.cors_allow_origins is None:
            return ["*"] if self.auth == "none" else []
        return self.web.cors_allow_origins

    def tenant_for_ae(self, calling_ae: str, called_ae: str) -> str:
        """The called AE title selects a tenant when it is in the AE table, else the caller's entry does."""
        for ae in (called_ae.strip(), calling_ae.strip()):
            entry = self.dimse.ae_table.get(ae)
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
            key = flat_name(Settings, tuple(e["loc"]))
            if key in Settings.model_fields and key not in flat_keys(Settings):  # a rule across a section's keys
                problems.append(f"settings [{key}]: {e['msg']}")
                continue
            env_name = ENV_PREFIX + key.split(".")[0].upper() if e["loc"] else "?"
            problems.append(f"setting '{key}' ({env_name}): {e['msg']} (got {e.get('input')!r})")
        raise SettingsError("bad settings, fix these and start again:\n  " + "\n  ".join(problems)) from None
    except EnvSettingError as err:
        raise SettingsError(f"bad settings, fix this and start again:\n  {err}") from None
    except PydanticSettingsError as err:  # a source could not read a value; the env source says why
        reason = err.__cause__ if isinstance(err.__cause__, EnvSettingError) else err
        raise SettingsError(f"bad settings, fix this and start again:\n  {reason}") from None
    except ValueError as err:  # e.g. a TOML syntax error
        raise SettingsError(f"cannot read settings from {config_file()}: {err}") from None
