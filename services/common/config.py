"""One typed settings object, read once at start: defaults < config file < environment < CLI.

Every setting is declared once below with its help text. Environment variables are the field
name upper-cased with the ``ZAQAR_`` prefix (``ZAQAR_MESSAGE_STORE``). A config file is TOML with
the same keys at top level. Invalid values fail loudly with :class:`ConfigurationError`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

ENV_PREFIX = "ZAQAR_"
# The default of ``delivery_lease_margin``, also the dispatcher's when it is built without
# settings.
DELIVERY_LEASE_MARGIN: Final = 10.0


class Service(StrEnum):
    """The gRPC services of a deployment (each a process of its own). A name that is not one
    of them is a ``ValueError``, never somebody else's address or store."""

    QUEUE = "queue"
    MESSAGE = "message"
    NOTIFIER = "notifier"


class ConfigurationError(Exception):
    """A setting is missing or invalid; the message says which and why."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata=_help("Address every service binds to."))
    data_dir: str = field(
        default="./zaqar-data",
        metadata=_help("Folder of the embedded SQLite stores (used by the default store URIs)."),
    )
    queue_port: int = field(default=50061, metadata=_help("gRPC port of queue_svc (0 = any)."))
    message_port: int = field(default=50062, metadata=_help("gRPC port of message_svc (0 = any)."))
    notifier_port: int = field(
        default=50063, metadata=_help("gRPC port of notifier_svc (0 = any).")
    )
    http_port: int = field(default=8888, metadata=_help("HTTP port of the API gateway."))
    ws_port: int = field(default=9000, metadata=_help("WebSocket port of the API gateway."))
    ws_max_connections: int = field(
        default=10000,
        metadata=_help(
            "WebSocket connections one gateway process holds open at once; a new one beyond "
            "them is refused at the handshake with 503 and Retry-After. Lowered at start, with "
            "http_max_connections, to what the process's open-files limit leaves room for. "
            "0: no limit."
        ),
    )
    http_max_connections: int = field(
        default=10000,
        metadata=_help(
            "HTTP connections one gateway process holds open at once; one more is answered "
            "503 with Retry-After and closed. Lowered at start, with ws_max_connections, to "
            "what the process's open-files limit leaves room for. 0: no limit."
        ),
    )
    http_max_receiving_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_help(
            "Bytes of HTTP requests (heads and bodies) one gateway process holds while they "
            "are not yet received whole, over all its connections; a request that would take "
            "it past them is answered 503 with Retry-After and its connection closed. "
            "0: no limit."
        ),
    )
    max_waiting: int = field(
        default=2000,
        metadata=_help(
            "Long polls (claims and listings with wait, over HTTP and WebSocket) one gateway "
            "process holds at once; one more is answered 503 with Retry-After. Each holds "
            "about 56 KiB of the gateway's memory. 0: no limit."
        ),
    )
    message_max_waiting: int = field(
        default=10000,
        metadata=_help(
            "Long polls and streaming pulls one message_svc process holds waiting at once; "
            "one more is refused UNAVAILABLE (reason WAITS_FULL; 503 through the gateway). "
            "Each holds about 27 KiB of its memory. 0: no limit."
        ),
    )
    grpc_max_receiving_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=_help(
            "Bytes of requests one gRPC service process (queue_svc, message_svc, "
            "notifier_svc) holds for the calls it is serving; a request over 64 KiB that "
            "would take it past them is refused UNAVAILABLE (reason RECEIVING_FULL; 503 "
            "through the gateway) before anything is done for it, unless it is the only one "
            "over 64 KiB held. A byte held costs about 5 of memory. 0: no limit."
        ),
    )
    http_request_timeout: float = field(
        default=30.0,
        metadata=_help(
            "Seconds an HTTP connection has to send a whole request (head and body), from "
            "when it opens or its previous answer ends: past them a request begun is answered "
            "408, and the connection is closed. 0: no limit."
        ),
    )
    metrics: bool = field(
        default=True,
        metadata=_help(
            "Serve Prometheus metrics: the gateway at /metrics on its HTTP port, each gRPC "
            "service on its metrics port."
        ),
    )
    queue_metrics_port: int = field(
        default=9181, metadata=_help("Prometheus metrics port of queue_svc (0 = any).")
    )
    message_metrics_port: int = field(
        default=9182, metadata=_help("Prometheus metrics port of message_svc (0 = any).")
    )
    notifier_metrics_port: int = field(
        default=9183, metadata=_help("Prometheus metrics port of notifier_svc (0 = any).")
    )
    queue_store: str = field(
        default="", metadata=_help("Store URI of queue_svc; default sqlite:///<data_dir>/queues.db.")
    )
    message_store: str = field(
        default="",
        metadata=_help("Store URI of message_svc; default sqlite:///<data_dir>/messages.db."),
    )
    notifier_store: str = field(
        default="",
        metadata=_help("Store URI of notifier_svc; default sqlite:///<data_dir>/notifier.db."),
    )
    queue_target: str = field(
        default="", metadata=_help("gRPC target of queue_svc; default <host>:<queue_port>.")
    )
    message_targets: str = field(
        default="",
        metadata=_help(
            "gRPC target of message_svc: host:port, dns:///<name>:<port> resolving to every "
            "replica, or a comma-separated list of replicas' IP:port; calls are balanced over "
            "every replica (round_robin); default <host>:<message_port>."
        ),
    )
    notifier_target: str = field(
        default="", metadata=_help("gRPC target of notifier_svc; default <host>:<notifier_port>.")
    )
    tls_cert_file: str = field(
        default="",
        metadata=_help(
            "PEM certificate (chain) of this process, with tls_key_file: setting both turns TLS "
            "on for gRPC. The process's gRPC server then accepts TLS only, and it is presented "
            "as client certificate to the services this process calls."
        ),
    )
    tls_key_file: str = field(
        default="", metadata=_help("PEM private key (unencrypted) of tls_cert_file.")
    )
    tls_ca_file: str = field(
        default="",
        metadata=_help(
            "PEM CA certificate(s) that verify the services this process calls (and, with "
            "tls_require_client_cert, its clients); empty = gRPC's default roots. Set alone, "
            "it turns TLS on for outgoing channels only (a gateway without a certificate)."
        ),
    )
    tls_require_client_cert: bool = field(
        default=False,
        metadata=_help(
            "Mutual TLS: gRPC servers refuse clients without a certificate signed by "
            "tls_ca_file. Needs tls_cert_file, tls_key_file and tls_ca_file."
        ),
    )
    tls_server_name: str = field(
        default="",
        metadata=_help(
            "Host name checked in the certificates of the services this process calls, when "
            "their targets name another host (e.g. an IP address); empty = the target's host."
        ),
    )
    tls_reload_interval: float = field(
        default=10.0,
        metadata=_help(
            "Seconds between looks at the tls_* files for new content (rotated "
            "certificates), taken without a restart by new connections; 0 = never."
        ),
    )
    secret_reload_interval: float = field(
        default=10.0,
        metadata=_help(
            "Seconds between looks at the files of the secrets that can change while a "
            "process runs (ZAQAR_SIGNED_URL_SECRET_FILE, ZAQAR_SIGNED_URL_PREVIOUS_SECRET_FILE, "
            "ZAQAR_MESSAGE_ENCRYPTION_KEYS_FILE, ZAQAR_KEYSTONE_PASSWORD_FILE, "
            "ZAQAR_SMTP_PASSWORD_FILE): new content is used without a restart; "
            "0 = read at start only."
        ),
    )
    rpc_timeout: float = field(
        default=5.0, metadata=_help("Deadline in seconds of every call between services.")
    )
    metadata_cache_ttl: float = field(
        default=30.0,
        metadata=_help(
            "Seconds message_svc keeps a queue's metadata when no invalidation arrives "
            "(a safety net; updates invalidate synchronously)."
        ),
    )
    gc_interval: float = field(
        default=5.0, metadata=_help("Seconds between sweeps of expired messages and claims.")
    )
    shutdown_grace: float = field(
        default=5.0, metadata=_help("Seconds in-flight calls get to finish on SIGTERM.")
    )
    gateway_cpus: str = field(
        default="",
        metadata=_help(
            'CPUs the API gateway runs on, as a Linux CPU list ("0", "0-3", "0,2"); empty = '
            "wherever the system puts it (docs/operations.md, \"CPU placement\")."
        ),
    )
    queue_cpus: str = field(default="", metadata=_help("CPUs queue_svc runs on (as gateway_cpus)."))
    message_cpus: str = field(
        default="", metadata=_help("CPUs message_svc runs on (as gateway_cpus).")
    )
    notifier_cpus: str = field(
        default="", metadata=_help("CPUs notifier_svc runs on (as gateway_cpus).")
    )
    fair_queues: bool = field(
        default=True,
        metadata=_help(
            "Fair queues: claims of standard queues prefer messages of groups (group_id) that "
            "do not hold a disproportionate share of the queue's in-flight messages "
            "(docs/architecture.md, \"Fair queues\"); off: claims take the oldest messages."
        ),
    )
    fair_share_percent: int = field(
        default=25,
        metadata=_help("A group is noisy above this per cent of a queue's in-flight messages "
                       "with a group (1-100) ..."),
    )
    fair_min_in_flight: int = field(
        default=8,
        metadata=_help("... and with at least this many in flight (1 or more)."),
    )
    fair_lookahead: int = field(
        default=100,
        metadata=_help("Claimable messages a fair claim reads at most by seq past those it "
                       "takes (0-100000); past them it takes the oldest messages of the groups "
                       "that are not noisy from its group index. Messages without a group are "
                       "found within this window only."),
    )
    fair_backoff: float = field(
        default=0.0,
        metadata=_help("Seconds a queue's claims go without fairness after a fair claim that "
                       "found too few messages of other groups within the lookahead, none in "
                       "the group index past it, and took the noisy group's anyway (0-60; 0: "
                       "never)."),
    )
    message_batch: bool = field(
        default=True,
        metadata=_help(
            "The gateway coalesces its calls to message_svc under load: a call that would start "
            "while others are in flight may wait for one of them to return, and the calls that "
            "waited go together as one MessagesInternal.Batch call."
        ),
    )
    message_stream: bool = field(
        default=True,
        metadata=_help(
            "With message_batch on, the gateway sends its calls to message_svc as requests on "
            "one long-lived MessagesInternal.Exchange stream instead of unary calls (about a "
            "third of the CPU per call on each side)."
        ),
    )
    message_batch_max: int = field(
        default=32, metadata=_help("Most calls one MessagesInternal.Batch carries (2..256).")
    )
    message_batch_in_flight: int = field(
        default=1,
        metadata=_help(
            "Requests to message_svc in flight (alone or batched) from which further calls "
            "wait to go together, at least: the gateway raises it while waiting gathers "
            "nothing (1 = whenever anything is in flight)."
        ),
    )
    message_batch_wait: float = field(
        default=0.025,
        metadata=_help(
            "Longest a call waits for the calls in flight, in seconds (0.001..60): then the "
            "calls waiting go at once, beside the slow ones, so that a call a store takes "
            "seconds to answer or to fail does not hold back the calls behind it."
        ),
    )
    message_checksum: bool = field(
        default=False, metadata=_help('Add "checksum": "MD5:<hex>" to every message returned.')
    )
    message_filters: str = field(
        default="",
        metadata=_help(
            "Comma-separated message filters (entry points of zaqar_grpc.message_filters) that "
            "message_svc applies to every queue, in order, after the built-in message_schema; "
            "a queue may add more with its _filters metadata. A name that is not installed is "
            "a start-up error."
        ),
    )
    message_encryption_keys: str = field(
        default="",
        metadata=_help(
            "Keys of message encryption at rest (queues with _enable_encrypt_messages): "
            "<kid>:<base64 of 32 bytes>, separated by commas or line breaks, or a JSON object "
            "of kid -> key; the first seals new messages, every one opens what it sealed. "
            "Every service reads it (best from ZAQAR_MESSAGE_ENCRYPTION_KEYS_FILE); empty: "
            "such queues are refused."
        ),
    )
    log_level: str = field(default="INFO", metadata=_help("Python logging level."))
    log_format: str = field(
        default="text",
        metadata=_help(
            'Format of the log lines on stderr: "text" (time, level, logger, [request id], '
            'message) or "json" (one JSON object per line).'
        ),
    )
    access_log: bool = field(
        default=True,
        metadata=_help(
            "The gateway logs one line per HTTP request (logger zaqar.access): method, path "
            "(query keys only), status, duration, request id and project."
        ),
    )
    pooling: bool = field(
        default=False,
        metadata=_help(
            "Serve the pool catalog: /v2/pools and /v2/flavors (admin), the `_flavor` of a "
            "new queue must name a flavor of its project, and the health check covers the "
            "catalog and every pool's store."
        ),
    )
    require_confirmation: bool = field(
        default=False,
        metadata=_help(
            "Subscribers must confirm a subscription (pre-signed PUT .../confirm sent to them) "
            "before they get notifications."
        ),
    )
    signed_url_secret: str = field(
        default="",
        metadata=_help(
            "Secret key of pre-signed URLs (HMAC-SHA256); needed by require_confirmation."
        ),
    )
    project_rate_limit: float = field(
        default=0.0,
        metadata=_help(
            "Requests per second one project may make through one gateway process, over HTTP "
            "and WebSocket together (extension); beyond it, 429 with Retry-After. With N "
            "gateway replicas a project may make N times this. 0: no limit."
        ),
    )
    project_rate_burst: int = field(
        default=0,
        metadata=_help(
            "Requests a project may make at once before project_rate_limit applies; 0: one "
            "second's worth of the rate (at least 1)."
        ),
    )
    project_rate_store: str = field(
        default="",
        metadata=_help(
            "A Redis URI (redis://, rediss://, redis+cluster://, redis+sentinel://, as the "
            "stores take) where every gateway replica counts project_rate_limit together: a "
            "project gets the rate once, whatever the replicas. Empty: each gateway process "
            "counts its own."
        ),
    )
    project_max_queues: int = field(
        default=0,
        metadata=_help(
            "Queues one project may have (extension); creating one more, by PUT or by posting "
            "to an absent queue, is refused with 403 until one is deleted. 0: no limit."
        ),
    )
    project_max_topics: int = field(
        default=0,
        metadata=_help(
            "Topics one project may have (extension), as project_max_queues. 0: no limit."
        ),
    )
    queue_max_subscriptions: int = field(
        default=0,
        metadata=_help(
            "Live subscriptions one queue (or topic) may have (extension); one more is refused "
            "with 403 until one is deleted or expires. Each post is delivered to every one of "
            "them, so this also bounds a post's fan-out. 0: no limit."
        ),
    )
    signed_url_previous_secret: str = field(
        default="",
        metadata=_help(
            "The secret of pre-signed URLs being retired, while rotating signed_url_secret: "
            "URLs signed with it still verify, new ones are signed with signed_url_secret. "
            "Clear it once the URLs it signed have expired. Needs signed_url_secret."
        ),
    )
    public_url: str = field(
        default="",
        metadata=_help(
            "Public base URL of the HTTP API, e.g. https://zaqar.example.com; when set, "
            "confirmation messages carry the full confirm URL."
        ),
    )
    auth_strategy: str = field(
        default="noauth",
        metadata=_help(
            'How callers are authenticated: "noauth" (trust X-Project-ID, and the project of '
            'gRPC requests) or "keystone" (validate X-Auth-Token, on HTTP and on the public gRPC '
            "API, with Keystone; the project and roles come from the token). Every process of "
            "a deployment needs the same value."
        ),
    )
    admin_mode: bool = field(
        default=False,
        metadata=_help(
            "For development only: with auth_strategy noauth, treat every caller of the HTTP "
            "and WebSocket APIs as an admin (the admin role is added to X-Roles), as Zaqar's "
            "admin_mode does, so the pool, flavor and health APIs can be tried without "
            "sending roles. Refused together with keystone auth."
        ),
    )
    keystone_url: str = field(
        default="",
        metadata=_help(
            "Keystone's identity API v3, e.g. http://127.0.0.1:5000/v3 (keystone auth); also the "
            'uri of the WWW-Authenticate: Keystone uri="..." header of 401 answers.'
        ),
    )
    keystone_username: str = field(
        default="",
        metadata=_help(
            "Service user every process authenticates as (keystone auth): it validates tokens, "
            "calls the other services, and is the trustee of trust+ subscriptions' trusts."
        ),
    )
    keystone_password: str = field(default="", metadata=_help("Password of the service user."))
    keystone_project: str = field(
        default="service", metadata=_help("Project the service user's token is scoped to.")
    )
    keystone_user_domain: str = field(
        default="Default", metadata=_help("Domain name of the service user.")
    )
    keystone_project_domain: str = field(
        default="Default", metadata=_help("Domain name of the service user's project.")
    )
    keystone_service_roles: str = field(
        default="service",
        metadata=_help(
            "Comma-separated Keystone roles that make a token a service token: a gRPC caller "
            "whose x-service-token carries one may name any project and call the internal "
            "services. The service user needs one of them."
        ),
    )
    keystone_timeout: float = field(
        default=5.0,
        metadata=_help(
            "Seconds a request to Keystone (a token validation, this process's own token, a "
            "trust) may take before the caller gets 503 \"the identity service cannot be "
            "reached\"."
        ),
    )
    token_cache_seconds: float = field(
        default=300.0,
        metadata=_help(
            "Longest time a validated X-Auth-Token is trusted without asking Keystone again "
            "(never past the token's expiry); a revoked token may be accepted this long."
        ),
    )
    smtp_host: str = field(
        default="localhost", metadata=_help("SMTP server that mailto: notifications go through.")
    )
    smtp_port: int = field(default=25, metadata=_help("Port of the SMTP server."))
    smtp_starttls: bool = field(
        default=False, metadata=_help("Upgrade the SMTP connection with STARTTLS.")
    )
    smtp_user: str = field(default="", metadata=_help("SMTP user name; empty = no login."))
    smtp_password: str = field(default="", metadata=_help("SMTP password."))
    smtp_sender: str = field(
        default="zaqar@localhost",
        metadata=_help('From address of e-mails whose subscription sets no "from" option.'),
    )
    notify_linger: float = field(
        default=0.05,
        metadata=_help(
            "Seconds message_svc gathers posted messages before handing them to notifier_svc "
            "in one call (0 = one call per post); bounds the delay this adds to notifications."
        ),
    )
    delivery_timeout: float = field(
        default=10.0,
        metadata=_help("Seconds one webhook POST or one e-mail may take before it has failed."),
    )
    delivery_lease_margin: float = field(
        default=DELIVERY_LEASE_MARGIN,
        metadata=_help(
            "Seconds a delivery's lease lasts beyond delivery_timeout: deliveries a crashed "
            "notifier_svc was making are made again after delivery_timeout plus this. It must "
            "exceed the slowest notifier store write and the clock skew between replicas, or "
            "two replicas may make one delivery at once."
        ),
    )
    delivery_concurrency: int = field(
        default=64,
        metadata=_help(
            "Deliveries notifier_svc makes at once (each subscriber gets at most 4 of them)."
        ),
    )

    # Derived values -------------------------------------------------------------------------

    def store_uri(self, service: Service | str) -> str:
        """The store URI of ``service``: the configured one, or its SQLite file in
        ``data_dir``. Raises ValueError for a name that is not a :class:`Service`."""
        match Service(service):
            case Service.QUEUE:
                explicit, filename = self.queue_store, "queues.db"
            case Service.MESSAGE:
                explicit, filename = self.message_store, "messages.db"
            case Service.NOTIFIER:
                explicit, filename = self.notifier_store, "notifier.db"
        if explicit:
            return explicit
        return "sqlite:///" + str(Path(self.data_dir).resolve() / filename)

    def target(self, service: Service | str) -> str:
        """Where callers reach ``service``: one target, which may name several replicas
        (:func:`services.common.grpc_server.channel_target`). Raises ValueError for a name
        that is not a :class:`Service`."""
        match Service(service):
            case Service.QUEUE:
                return self.queue_target or f"{self.host}:{self.queue_port}"
            case Service.NOTIFIER:
                return self.notifier_target or f"{self.host}:{self.notifier_port}"
            case Service.MESSAGE:
                return self.message_targets or f"{self.host}:{self.message_port}"

    # Loading --------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        config_file: str | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        return cls._resolve(config_file, environ, overrides)[0]

    @classmethod
    def _resolve(
        cls,
        config_file: str | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        flags: Mapping[str, str] | None = None,
    ) -> tuple[Settings, dict[str, str]]:
        """The settings, and where each value given anywhere comes from (setting -> source);
        ``flags`` names the flag of each override."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        config_file = config_file or environ.get(ENV_PREFIX + "CONFIG_FILE")
        if config_file:
            try:
                with open(config_file, "rb") as fh:
                    values.update(tomllib.load(fh))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigurationError(f"cannot read config file {config_file}: {exc}") from exc
            sources.update(dict.fromkeys(values, f"file {config_file}"))
        for f in dataclasses.fields(cls):
            variable = ENV_PREFIX + f.name.upper()
            env_value = environ.get(variable)
            if env_value is not None:
                values[f.name] = env_value
                sources[f.name] = "environment"
            path = environ.get(variable + "_FILE") if f.name in SECRET_SETTINGS else None
            if path is not None:
                if env_value is not None:
                    raise ConfigurationError(
                        f"both {variable} and {variable}_FILE are set: set one of them"
                    )
                values[f.name] = read_secret(variable + "_FILE", path,
                                             absent_is_empty=f.name in ABSENT_IS_EMPTY)
                sources[f.name] = f"file {path} ({variable}_FILE)"
                if not os.path.lexists(path):
                    sources[f.name] += ", absent: empty"
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
                sources[key] = (flags or {}).get(key, "command line")
        settings = cls(**{k: _cast(k, v) for k, v in values.items()})
        return settings, sources

    @classmethod
    def effective(
        cls,
        config_file: str | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        flags: Mapping[str, str] | None = None,
    ) -> list[tuple[str, str, str]]:
        """(environment variable, value in effect, where it comes from) for every setting, as
        :meth:`load` resolves them; ``config_file`` is the one given on the command line,
        ``flags`` names the command-line flag of each override.

        A store URI or target left empty shows the value derived from other settings. Secrets
        (``*_password``, ``*_secret``, the message encryption keys, the password in a store URI)
        show as ``'***'`` when set.

        Raises:
            ConfigurationError: as :meth:`load`.
        """
        environ = os.environ if environ is None else environ
        settings, sources = cls._resolve(config_file, environ, overrides, flags)
        rows = []
        if config_file or ENV_PREFIX + "CONFIG_FILE" in environ:
            source = "--config" if config_file else "environment"
            config_file = config_file or environ[ENV_PREFIX + "CONFIG_FILE"]
            rows.append((ENV_PREFIX + "CONFIG_FILE", repr(config_file), source))
        for f in dataclasses.fields(cls):
            value = getattr(settings, f.name)
            source = sources.get(f.name, "default")
            derived = _derived(settings, f.name)
            if derived is not None and not value:
                value, source = derived
            rows.append((ENV_PREFIX + f.name.upper(), _shown(f.name, value), source))
        return rows

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, help) for every setting, for docs and --help."""
        return [
            (ENV_PREFIX + f.name.upper(), repr(f.default), f.metadata.get("help", ""))
            for f in dataclasses.fields(cls)
        ]


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# Secret settings that are URIs: shown with their password redacted, the rest kept.
_SECRET_URIS: frozenset[str] = frozenset(
    {"queue_store", "message_store", "notifier_store", "project_rate_store"}
)
# Settings that may also be read from a file named by ZAQAR_<NAME>_FILE, as Kubernetes mounts
# Secrets: passwords, the signing secret, message encryption keys, and store URIs (which may
# carry a password).
SECRET_SETTINGS: frozenset[str] = frozenset(
    name for name in _FIELDS
    if name.endswith(("_password", "_secret"))
    or name in _SECRET_URIS or name == "message_encryption_keys"
)


# Secret settings whose file may be absent from its folder: absent, the setting is empty
# (pre-signed URLs refused; no previous secret). An optional Kubernetes Secret mounted as files
# (the manifests' zaqar-signed-url) has no file for a key it lacks, nor any while it does not
# exist, and the processes read these files again while they run (secret_files.py), so the
# Secret and its key "previous" may come and go without a restart. A folder that does not exist
# is still an error (a wrong path), and so is an absent file of any other secret.
ABSENT_IS_EMPTY: frozenset[str] = frozenset({"signed_url_secret", "signed_url_previous_secret"})


# The largest secret file read: far more than any secret here needs (a keyring of a hundred
# encryption keys is under 8 KiB), so that a wrong path (a log, a device) fails at once
# instead of being read whole, at start and at every look while the process runs.
SECRET_FILE_MAX = 64 * 1024


def read_secret(variable: str, path: str, *, absent_is_empty: bool = False) -> str:
    """The content of a secret file, without its final line break; with ``absent_is_empty``,
    "" when the file is absent from a folder that exists (:data:`ABSENT_IS_EMPTY`).

    Raises:
        ConfigurationError: it cannot be read, is larger than :data:`SECRET_FILE_MAX` bytes,
            or is not UTF-8.
    """
    if absent_is_empty and not os.path.lexists(path) and os.path.isdir(
        os.path.dirname(path) or "."
    ):
        return ""
    try:
        with open(path, "rb") as fh:
            data = fh.read(SECRET_FILE_MAX + 1)
        if len(data) > SECRET_FILE_MAX:
            raise ConfigurationError(
                f"cannot read {variable}={path}: larger than {SECRET_FILE_MAX // 1024} KiB, "
                "which no secret is (is it the right file?)"
            )
        # Line breaks as text mode reads them (\r\n and \r become \n).
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        return text.removesuffix("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {variable}={path}: {exc}") from exc


_STORES = {"queue_store": "queue", "message_store": "message", "notifier_store": "notifier"}
_TARGETS = {"queue_target": "queue", "message_targets": "message",
            "notifier_target": "notifier"}


def _derived(settings: Settings, name: str) -> tuple[str, str] | None:
    """The value in effect of a setting whose empty value means "derived from others", and
    from which."""
    if name in _STORES:
        return settings.store_uri(_STORES[name]), "derived from ZAQAR_DATA_DIR"
    if name in _TARGETS:
        service = _TARGETS[name]
        source = f"derived from ZAQAR_HOST, {ENV_PREFIX}{service.upper()}_PORT"
        return settings.target(service), source
    return None


def _shown(name: str, value: Any) -> str:
    """``value`` as ``settings --effective`` shows it: secrets redacted."""
    if (name.endswith(("_password", "_secret")) or name == "message_encryption_keys") and value:
        return repr("***")
    if name in _SECRET_URIS and isinstance(value, str):
        from services.common.store_uri import redact

        return repr(redact(value))
    return repr(value)


def _cast(name: str, value: Any) -> Any:
    f = _FIELDS.get(name)
    if f is None:
        raise ConfigurationError(f"unknown setting {name!r}")
    kind: type[Any] = type(f.default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"setting {name} ({ENV_PREFIX + name.upper()}): expected {kind.__name__}, got {value!r}"
        ) from exc


# The limits (quotas, connections, the time to send a request; 0: no limit) each service
# reads: checked when it starts, and by `up` before it starts anything (services/preflight.py).
LIMITS: Final[Mapping[str, tuple[str, ...]]] = {
    "queue": ("project_max_queues", "project_max_topics", "grpc_max_receiving_bytes"),
    "notifier": ("queue_max_subscriptions", "grpc_max_receiving_bytes"),
    "gateway": ("ws_max_connections", "http_max_connections", "http_request_timeout",
                "http_max_receiving_bytes", "max_waiting"),
    "message": ("message_max_waiting", "grpc_max_receiving_bytes"),
}


def check_limits(settings: Settings, service: str) -> None:
    """The limits ``service`` reads (:data:`LIMITS`) are not negative (nor NaN or infinite).

    Raises:
        ConfigurationError: one is.
    """
    for name in LIMITS.get(service, ()):
        value = getattr(settings, name)
        if not value >= 0 or value == math.inf:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise ConfigurationError(
                f"{name} ({ENV_PREFIX}{name.upper()}) must be 0 (no limit) or a positive "
                f"number, not {shown}"
            )
