"""Settings from the environment (prefix ``REMINDERS_``, nested delimiter ``__``) or ``.env``.

The Kafka connection is rendered to FastStream and aiokafka parameters here and only
here, so TLS and SASL behave the same in every service and in the CLI.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

__all__ = [
    "AdminSettings",
    "BookingEventsSettings",
    "DatabaseSettings",
    "GatewaySettings",
    "InsightsSettings",
    "KafkaSettings",
    "MetricsSettings",
    "NotifierSettings",
    "PushSettings",
    "SchedulerSettings",
    "Settings",
    "SettingsInvalid",
    "SmtpSettings",
    "env_name",
    "is_loopback_host",
    "load_settings",
]

ENV_PREFIX = "REMINDERS_"


def is_loopback_host(host: str) -> bool:
    """localhost or a loopback address: a hop that never leaves the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def env_name(loc: Iterable[object]) -> str:
    """The environment variable behind a settings field: ("kafka", "port") ->
    REMINDERS_KAFKA__PORT."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


class SettingsInvalid(ValueError):
    """Settings that cannot be used. The message names fields (as environment variables)
    and what is wrong with them, never a value: values may be passwords."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("settings invalid: " + "; ".join(problems))
        self.problems = problems

    @classmethod
    def of(cls, exc: ValidationError | SettingsError) -> SettingsInvalid:
        if isinstance(exc, SettingsError):
            # pydantic-settings names the field and the source, never the value; keep only
            # the field (the source is always the environment or .env).
            text = str(exc)
            field_name = text.split('"')[1] if text.count('"') >= 2 else "?"
            return cls([f"{env_name([field_name])}: not valid JSON for a nested setting"])
        problems = []
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{env_name(error['loc'])}: {message}")
        return cls(problems)


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "reminders"
    topic_prefix: str = ""
    # All topics share this count so partition p holds the same practices everywhere.
    partitions: int = Field(default=12, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            missing = [
                env_name(["kafka", name])
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if not getattr(self, name)
            ]
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                f"sasl_username and sasl_password; missing: {', '.join(missing)}"
            )
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, password)
        return context

    def aiokafka_params(self) -> dict[str, Any]:
        """Keyword arguments shared by AIOKafkaProducer, AIOKafkaConsumer and the admin client."""
        params: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        context = self.ssl_context()
        if context is not None:
            params["ssl_context"] = context
        if self.security_protocol.startswith("SASL_"):
            assert self.sasl_password is not None
            params["sasl_mechanism"] = self.sasl_mechanism
            params["sasl_plain_username"] = self.sasl_username
            params["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return params

    def faststream_params(self) -> dict[str, Any]:
        """Keyword arguments for ``faststream.kafka.KafkaBroker``."""
        from faststream.security import (
            BaseSecurity,
            SASLPlaintext,
            SASLScram256,
            SASLScram512,
        )

        security: BaseSecurity | None = None
        context = self.ssl_context()
        if self.security_protocol.startswith("SASL_"):
            assert self.sasl_username is not None and self.sasl_password is not None
            cls = {
                "PLAIN": SASLPlaintext,
                "SCRAM-SHA-256": SASLScram256,
                "SCRAM-SHA-512": SASLScram512,
            }[self.sasl_mechanism or "PLAIN"]
            security = cls(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                ssl_context=context,
                use_ssl=self.security_protocol == "SASL_SSL",
            )
        elif self.security_protocol == "SSL":
            security = BaseSecurity(ssl_context=context, use_ssl=True)
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "security": security,
            "client_id": self.client_id,
        }


class MetricsSettings(BaseModel):
    host: str = "127.0.0.1"
    # 0 picks a free port (tests, several services on one host in the demo).
    port: int = Field(default=9400, ge=0, le=65535)


class SmtpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    # auto: STARTTLS with a checked certificate, required for any host but a loopback
    # relay, where it is used when offered. tls: TLS from the first byte (port 465).
    security: Literal["auto", "none", "starttls", "tls"] = "auto"
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = None
    pool_size: int = Field(default=4, ge=1, le=64)
    max_messages_per_connection: int = Field(default=100, ge=1)
    idle_noop_seconds: float = 30.0
    timeout: float = 15.0
    message_id_domain: str = "reminders.invalid"
    # DKIM signing, all three or none (services/notifier/dkim.py): the d= domain, the s=
    # selector, and the private key file (RSA PEM, or ed25519 as PEM or as the base64 seed
    # dknewkey writes).
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key_file: str | None = None

    @model_validator(mode="after")
    def _no_clear_auth(self) -> SmtpSettings:
        if self.username and self.security == "none" and not is_loopback_host(self.host):
            # AUTH over a clear connection would hand the password to anyone on the path.
            raise ValueError(
                "REMINDERS_SMTP__USERNAME is set with REMINDERS_SMTP__SECURITY=none for a "
                "host that is not loopback: AUTH would cross the network unencrypted; use "
                "auto, starttls or tls"
            )
        return self


class PushSettings(BaseModel):
    vapid_private_key: SecretStr | None = None
    vapid_subject: str = "mailto:beheer@example.invalid"
    # Only for the local push sink of the demo and tests.
    allow_insecure_loopback: bool = False
    # Host names (and their subdomains) the notifier may POST push messages to. None: the
    # push services of the major browsers, so a forged subscription cannot point it
    # anywhere else. The loopback sink is added when allow_insecure_loopback is on.
    allowed_hosts: list[str] | None = None
    timeout: float = Field(default=10.0, gt=0)


class BookingEventsSettings(BaseModel):
    # The consumer group; a non-empty topic prefix is put in front of it (and of the
    # transactional ids derived from it), so deployments sharing a cluster stay apart.
    group_id: str = "booking-events"
    # Appointments that ended longer ago than this are tombstoned (bounded state).
    retention_days: float = Field(default=7, gt=0)
    # How often the tombstones are written (also right after every partition load).
    sweep_interval_seconds: float = Field(default=300, gt=0)
    # Records per fetch; each fetch is one Kafka transaction per partition.
    batch_size: int = Field(default=10_000, ge=1, le=100_000)
    # Group membership: how soon a dead instance's partitions move to another one.
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)


class SchedulerSettings(BaseModel):
    group_id: str = "reminder-scheduler"
    retention_days: float = Field(default=7, gt=0)
    # Upper bound on one sleep of the timer loop; a due timer never waits longer.
    tick_seconds: float = Field(default=0.5, gt=0)
    # Reminders (and marker tombstones) per firing transaction, at most. A burst of
    # 100,000 due at once left in 7.7 s at 5,000 and in 12.9 s at 500 (fewer transactions).
    fire_batch_size: int = Field(default=5000, ge=1)
    # A timer that comes up later than this is "missed" and decided again at that moment.
    missed_after_seconds: float = Field(default=60, gt=0)
    # How often fired markers past retention are looked for (and tombstoned).
    retention_scan_seconds: float = Field(default=300, gt=0)
    # A fenced partition (another instance took it over) is loaded again after this,
    # if the group still assigns it here.
    fenced_retry_seconds: float = Field(default=30, gt=0)
    # On revocation, how long a firing transaction in flight may take to finish.
    stop_timeout_seconds: float = Field(default=10, gt=0)
    # The group consumer's liveness: a dead instance's partitions move after the session
    # timeout.
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    # Fault tests only: exit (status 137) after producing a firing transaction, before
    # committing it, as a crash at the worst moment.
    crash_after_send: bool = False


class NotifierSettings(BaseModel):
    group_id: str = "notifier"
    # Small batches keep the window of "sent but not yet committed" small.
    batch_size: int = Field(default=20, ge=1, le=1000)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    # Mail server unreachable: the partition pauses and tries again, backing off from
    # outage_backoff_seconds to outage_backoff_max_seconds; only after outage_max_seconds
    # of continuous outage are the waiting reminders recorded as failed.
    outage_backoff_seconds: float = Field(default=2.0, gt=0)
    outage_backoff_max_seconds: float = Field(default=60.0, gt=0)
    outage_max_seconds: float = Field(default=6 * 3600.0, gt=0)
    # One reminder whose mail or push keeps failing transiently (4xx, 429, 5xx) after the
    # in-process retries is held back and tried again with the partition's backoff for
    # this long before it fails: greylisting and short throttling must not lose reminders,
    # and one stubborn recipient must not hold up a partition for hours.
    transient_hold_seconds: float = Field(default=15 * 60.0, ge=0)
    # On revoke or stop, how long the batch in hand may take to finish and commit.
    drain_seconds: float = Field(default=20.0, gt=0)
    # Before each batch the tables catch up with their topics; give up (and retry) after.
    catch_up_timeout_seconds: float = Field(default=10.0, gt=0)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)


class DatabaseSettings(BaseModel):
    # An SQLAlchemy async URL. The embedded default needs nothing installed; production
    # uses PostgreSQL (postgresql+asyncpg://user@host/db).
    url: SecretStr = SecretStr("sqlite+aiosqlite:///var/reminders.sqlite3")
    echo: bool = False


class AdminSettings(BaseModel):
    """practice-admin: the beheeromgeving and the patient links."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Where patients and users reach it (links in mails); no trailing slash.
    public_url: str = "http://127.0.0.1:8080"
    # Signs sessions' CSRF tokens and the patient links; required outside the demo.
    secret_key: SecretStr | None = None
    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    login_code_minutes: int = Field(default=10, ge=1, le=60)
    demo: bool = False


class GatewaySettings(BaseModel):
    """his-gateway: the HTTP front door for HIS vendors."""

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    # Signs the access tokens; required outside the demo and tests.
    token_secret: SecretStr | None = None
    token_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch: int = Field(default=500, ge=1, le=500)
    demo: bool = False


class InsightsSettings(BaseModel):
    group_id: str = "insights"
    # Records per fetch; each fetch is one database transaction (rows and positions).
    batch_size: int = Field(default=5_000, ge=1, le=100_000)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REMINDERS_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    metrics: MetricsSettings = MetricsSettings()
    smtp: SmtpSettings = SmtpSettings()
    push: PushSettings = PushSettings()
    booking_events: BookingEventsSettings = BookingEventsSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    notifier: NotifierSettings = NotifierSettings()
    database: DatabaseSettings = DatabaseSettings()
    admin: AdminSettings = AdminSettings()
    gateway: GatewaySettings = GatewaySettings()
    insights: InsightsSettings = InsightsSettings()
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; raises SettingsInvalid, which names fields only."""
    try:
        return Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        raise SettingsInvalid.of(exc) from None
