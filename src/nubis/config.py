"""Settings: defaults < config file (TOML) < NUBIS_* environment variables.

The config file is ``$NUBIS_CONFIG`` or ``/etc/nubis/nubis.toml`` when it exists.
Secrets are ``SecretStr`` so they never show in a repr or a log line.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from nubis.files import write_atomically

DEFAULT_CONFIG_FILE = Path("/etc/nubis/nubis.toml")


def config_file() -> Path:
    return Path(os.environ.get("NUBIS_CONFIG", DEFAULT_CONFIG_FILE))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NUBIS_", extra="ignore")

    data_dir: Path = Path("/var/lib/nubis")
    database_url: str | None = None  # default: SQLite file in data_dir
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    # HTTPS by default: the operator's certificate and key, or a self-signed pair made
    # on the first run in <data_dir>/tls (valid for localhost, this machine's name, the
    # listen address and tls_names). Plain HTTP only when asked for (a TLS proxy in front)
    plain_http: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_names: list[str] = Field(default_factory=list)
    # the local libvirtd, registered as host "local" by `nubis serve`
    local_host_uri: str = "qemu:///system"
    register_local_host: bool = True
    build_tiny_image: bool = True
    # on the first run: a storage pool "default" (a directory on the local host) and a
    # NAT network "default" (a free 10.x.y.0/24) of project admin, both removable
    first_run_defaults: bool = True
    default_pool_path: Path = Path("/var/lib/libvirt/nubis/volumes")
    # where instance disks live on each host (a libvirt dir pool Nubis creates)
    pool_path: Path = Path("/var/lib/libvirt/nubis/disks")
    console_path: Path = Path("/var/lib/libvirt/nubis/console")
    task_workers: int = 4
    # controllers sharing one database: a controller's id (default: made on its first
    # start, kept in <data_dir>/controller-id), and how soon the tasks of one that
    # died are taken over by another
    controller_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    task_takeover_seconds: float = Field(default=30.0, ge=2.0, le=3600.0)
    token_ttl_seconds: int = 12 * 3600
    # how long a console ticket (and its VNC password) stays valid, unused
    console_ticket_seconds: int = Field(default=60, ge=5, le=3600)
    stop_timeout_seconds: float = 30.0
    reconcile_interval_seconds: float = 30.0
    migration_max_downtime_ms: int = 500
    migration_max_bandwidth_mib_s: int | None = None  # None: as fast as the link allows
    maintenance_parallel: int = 2  # live migrations at once when draining a host
    keepalive_interval: int = 5
    keepalive_count: int = 3
    # host health: how often each host is checked, how long it may fail its checks
    # before it is judged (fenced, declared down, its HA instances restarted
    # elsewhere), and how many restarts of one instance are allowed per window
    ha_check_interval_seconds: float = Field(default=5.0, ge=0.2, le=300.0)
    host_down_after_seconds: float = Field(default=20.0, ge=1.0, le=3600.0)
    ha_max_restarts: int = Field(default=3, ge=1, le=100)
    ha_restart_window_seconds: float = Field(default=600.0, ge=10.0)
    # monitoring: how often hosts and instances are sampled, and how long samples
    # are kept at each resolution (raw; 5-minute averages; hourly averages)
    collect_metrics: bool = True
    metrics_interval_seconds: float = Field(default=15.0, ge=1.0, le=3600.0)
    metrics_raw_hours: int = Field(default=24, ge=1)
    metrics_5min_days: int = Field(default=30, ge=1)
    metrics_hourly_days: int = Field(default=365, ge=1)
    events_retention_days: int = Field(default=90, ge=1)
    # how often usage is recorded for billing (the time since the last sweep is
    # attributed to what exists at the sweep)
    metering_interval_seconds: float = Field(default=60.0, ge=1.0, le=3600.0)
    # alarm e-mails go through this SMTP server (none: e-mail notifications are refused)
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "nubis@localhost"
    # audit records older than this are removed (the auditor exports them before)
    audit_retention_days: int = Field(default=365, ge=1)
    # bearer token of GET /metrics (Prometheus); default: <data_dir>/metrics-token
    metrics_token: SecretStr | None = None
    # secret used to encrypt credentials at rest; default: <data_dir>/secret.key
    secret_key: SecretStr | None = None
    # request bodies larger than this are refused before parsing (streamed uploads of
    # images and volumes excepted: they have their own limits)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # login throttling per client address: this many failed logins within the window
    # block the address for the block time (no password is checked while blocked)
    login_address_max_failures: int = Field(default=20, ge=1)
    login_address_window_seconds: float = Field(default=300.0, ge=1.0)
    login_address_block_seconds: float = Field(default=300.0, ge=1.0)
    # images: the largest upload (or import) the image store takes, and the one
    # directory of the server files may be imported from (default: <data_dir>/import;
    # it may not hold the data directory)
    max_image_bytes: int = Field(default=64 * 1024**3, ge=1024**2)
    import_dir: Path | None = None
    # test hook: "<task kind>:<step>" makes the process exit at that step,
    # "<task kind>:<step>:raise" makes the step fail; "@<file>": read from that file
    # at each step
    fault_inject: str | None = Field(default=None)

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
        return (init_settings, env_settings, toml)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'nubis.db'}"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def images_import_dir(self) -> Path:
        """Where server files may be imported from; never the data directory itself."""
        found = (self.import_dir or self.data_dir / "import").resolve()
        data = self.data_dir.resolve()
        if data.is_relative_to(found):
            raise ValueError(f"import_dir {found} holds the data directory {data}: choose another")
        return found

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.image_dir, self.log_dir, self.images_import_dir):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)

    def _secret_file(self, name: str) -> str:
        """A random secret kept in ``<data_dir>/<name>``, created on first use (0600)."""
        path = self.data_dir / name
        if not path.exists():
            write_atomically(path, secrets.token_urlsafe(32), keep_existing=True)
        return path.read_text().strip()

    def encryption_key(self) -> bytes:
        """The key that encrypts secrets at rest."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        return self._secret_file("secret.key").encode()

    def scrape_token(self) -> str:
        """The bearer token Prometheus presents at ``/metrics``."""
        if self.metrics_token is not None:
            return self.metrics_token.get_secret_value()
        return self._secret_file("metrics-token")


@lru_cache
def get_settings() -> Settings:
    return Settings()
