"""One typed settings object, read from the environment (12-factor).

Every setting is declared once in ``SPECS``: its variable name, how to parse it, its default, whether it is
a secret, and which roles cannot start without it. ``load`` never raises on bad input: it returns every
problem at once so a role can exit with one message naming all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit


class Role(StrEnum):
    WEB = "web"
    PROXY = "proxy"
    WORKER = "worker"
    ALL = "all"


SERVER_ROLES = frozenset({Role.WEB, Role.PROXY, Role.WORKER})
EVERY_ROLE = SERVER_ROLES
# The roles that talk to the identity providers: the worker provisions, the web role serves the identity API.
IDENTITY_ROLES = frozenset({Role.WEB, Role.WORKER})


class SettingError(ValueError):
    """A value that does not parse; its message says what was expected."""


def _str(raw: str) -> str:
    if not raw.strip():
        raise SettingError("must not be empty")
    return raw.strip()


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingError(f"expected an integer, got {raw!r}") from None


def _positive_int(raw: str) -> int:
    value = _int(raw)
    if value <= 0:
        raise SettingError(f"expected a positive integer, got {value}")
    return value


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingError(f"expected a number, got {raw!r}") from None


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingError(f"expected true or false, got {raw!r}")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise SettingError(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise SettingError("expected an http(s) URL")
    return raw.strip().rstrip("/")


def _database_url(raw: str) -> str:
    """Accept the usual postgres:// spellings and pin the psycopg 3 async driver."""
    value = raw.strip()
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise SettingError("expected a postgresql:// URL")
    return f"postgresql+psycopg://{rest}"


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
        raise SettingError("expected a redis://, rediss:// or unix:// URL")
    return value


def _hex_key(raw: str) -> str:
    value = raw.strip()
    try:
        decoded = bytes.fromhex(value)
    except ValueError:
        raise SettingError("expected hex") from None
    if len(decoded) < 32:
        raise SettingError("expected at least 32 bytes (64 hex characters)")
    return value


def _signing_keys(raw: str) -> str:
    for entry in raw.split(","):
        kid, sep, secret = entry.strip().partition(":")
        if not sep or not kid:
            raise SettingError("expected kid:hex[,kid:hex...]")
        _hex_key(secret)
    return raw.strip()


def _upstreams(raw: str) -> str:
    from poindexter_cloud.proxy.upstreams import UpstreamConfigError, parse_upstreams

    try:
        parse_upstreams(raw)
    except UpstreamConfigError as exc:
        raise SettingError(str(exc)) from None
    return raw


def _non_negative_int(raw: str) -> int:
    value = _int(raw)
    if value < 0:
        raise SettingError(f"expected zero or a positive integer, got {value}")
    return value


def _stripe_secret_key(raw: str) -> str:
    value = _str(raw)
    if not value.startswith(("sk_", "rk_")):
        raise SettingError("expected a Stripe secret or restricted key (sk_... or rk_...)")
    return value


def _telnyx_api_key(raw: str) -> str:
    value = _str(raw)
    if not value.startswith("KEY"):
        raise SettingError("expected a Telnyx API v2 key (KEY...)")
    return value


def _json_object(raw: str) -> str:
    """A JSON object, kept as its text (a service-account key file's contents)."""
    import json

    try:
        data = json.loads(raw)
    except ValueError:
        raise SettingError("expected a JSON object") from None
    if not isinstance(data, dict):
        raise SettingError("expected a JSON object")
    return raw.strip()


def _email(raw: str) -> str:
    value = _str(raw).lower()
    local, sep, domain = value.partition("@")
    if not sep or not local or "." not in domain:
        raise SettingError("expected an email address")
    return value


def _domain(raw: str) -> str:
    value = _str(raw).lower()
    if "." not in value or "@" in value or "/" in value:
        raise SettingError("expected a domain name such as example.com")
    return value


MAX_ATTACHMENT_LIMIT = 25 * 1024 * 1024  # Gmail's limit on a message's attachments


def _attachment_bytes(raw: str) -> int:
    value = _positive_int(raw)
    if value > MAX_ATTACHMENT_LIMIT:
        raise SettingError(f"expected at most {MAX_ATTACHMENT_LIMIT} (25 MiB, Gmail's limit), got {value}")
    return value


def _country(raw: str) -> str:
    value = _str(raw).upper()
    if len(value) != 2 or not value.isalpha():
        raise SettingError("expected an ISO 3166 two-letter country code")
    return value


def _area_codes(raw: str) -> tuple[str, ...]:
    codes = tuple(code.strip() for code in raw.split(",") if code.strip())
    if not all(code.isdigit() for code in codes):
        raise SettingError("expected area codes (digits) separated by commas")
    return codes


STRIPE_API_URL = "https://api.stripe.com"
TELNYX_API_URL = "https://api.telnyx.com/v2"


@dataclass(frozen=True, slots=True)
class Spec:
    """The declaration of one setting."""

    env: str
    parse: Callable[[str], Any]
    default: str | None = None
    secret: bool = False
    required_by: frozenset[Role] = frozenset()
    help: str = ""
    # A default only good enough for development: production must set the variable itself.
    dev_only_default: bool = False
    # Roles that may run without it in development (sandbox providers) but not in production.
    production_required_by: frozenset[Role] = frozenset()

    @property
    def attr(self) -> str:
        return self.env.lower()


DEV_SECRET = "00" * 32  # obviously-not-a-secret, refused in production


def setting(env: str, parse: Callable[[str], Any], default: str | None = None, **options: Any) -> Any:
    """Declare a settings field and the variable it is read from, in one place."""
    return field(metadata={"spec": Spec(env, parse, default, **options)})


@dataclass(frozen=True, slots=True)
class Settings:
    """Parsed settings. Fields are declared with ``setting``; ``load`` fills every one."""

    environment: str = setting(
        "ENVIRONMENT",
        _choice("development", "test", "production"),
        "development",
        help="development, test or production; production refuses dev defaults",
    )
    database_url: str = setting(
        "DATABASE_URL",
        _database_url,
        secret=True,
        required_by=EVERY_ROLE,
        help="PostgreSQL URL (postgresql://user:pass@host/db)",
    )
    redis_url: str = setting(
        "REDIS_URL",
        _redis_url,
        secret=True,
        required_by=EVERY_ROLE,
        help="Redis URL for the queue, rate limits and caches",
    )
    secret_key: str = setting(
        "SECRET_KEY",
        _hex_key,
        DEV_SECRET,
        secret=True,
        required_by=EVERY_ROLE,
        dev_only_default=True,
        help="64+ hex chars; root secret for API-key HMACs and signed links",
    )
    secret_key_previous: str | None = setting(
        "SECRET_KEY_PREVIOUS",
        _hex_key,
        secret=True,
        help="the SECRET_KEY before a rotation: what it hashed or signed keeps working (see operations.md)",
    )
    log_level: str = setting(
        "LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info", help="log level"
    )
    access_log: bool = setting("ACCESS_LOG", _bool, "true", help="one JSON log line per HTTP request")
    db_pool_size: int = setting(
        "DB_POOL_SIZE", _positive_int, "10", help="PostgreSQL connections per process"
    )
    redis_pool_size: int = setting(
        "REDIS_POOL_SIZE", _positive_int, "256", help="Redis connections per process (requests wait beyond)"
    )
    queue_name: str = setting("QUEUE_NAME", _str, "poindexter", help="SAQ queue name (its Redis key prefix)")
    worker_concurrency: int = setting(
        "WORKER_CONCURRENCY", _positive_int, "10", help="jobs one worker process runs at once"
    )
    job_max_attempts: int = setting(
        "JOB_MAX_ATTEMPTS", _positive_int, "5", help="attempts before a job ends as failed"
    )
    job_retry_delay_seconds: float = setting(
        "JOB_RETRY_DELAY_SECONDS", _float, "1.0", help="first retry delay in seconds; doubles each attempt"
    )
    usage_partitions_ahead: int = setting(
        "USAGE_PARTITIONS_AHEAD", _positive_int, "3", help="monthly usage_events partitions kept ahead"
    )
    usage_events_retention_months: int = setting(
        "USAGE_EVENTS_RETENTION_MONTHS",
        _positive_int,
        "25",
        help="whole months of raw usage events kept (older partitions are dropped; monthly totals stay)",
    )
    job_history_retention_days: int = setting(
        "JOB_HISTORY_RETENTION_DAYS",
        _positive_int,
        "30",
        help="days the record of a finished job (completed or failed) is kept; unfinished ones stay",
    )
    message_retention_days: int = setting(
        "MESSAGE_RETENTION_DAYS",
        _positive_int,
        "90",
        help="days SMS (received and sent) and received Signal messages are kept for Dex to read",
    )
    web_base_url: str = setting(
        "WEB_BASE_URL", _http_url, "http://127.0.0.1:8000", help="public URL of the web role"
    )
    proxy_base_url: str = setting(
        "PROXY_BASE_URL", _http_url, "http://127.0.0.1:8001", help="public URL of the AI proxy role"
    )
    otel_traces_exporter: str = setting(
        "OTEL_TRACES_EXPORTER",
        _choice("none", "console", "otlp"),
        "none",
        help="where OpenTelemetry spans go",
    )
    otel_exporter_otlp_endpoint: str | None = setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT", _http_url, help="OTLP/HTTP endpoint when the exporter is otlp"
    )

    jwt_signing_keys: str | None = setting(
        "JWT_SIGNING_KEYS",
        _signing_keys,
        secret=True,
        help="kid:hex[,kid:hex...]; the first signs access tokens, all verify (default: from SECRET_KEY)",
    )
    access_token_ttl_seconds: int = setting(
        "ACCESS_TOKEN_TTL_SECONDS", _positive_int, "900", help="lifetime of an access token (JWT)"
    )
    refresh_token_ttl_days: int = setting(
        "REFRESH_TOKEN_TTL_DAYS", _positive_int, "30", help="lifetime of a refresh token"
    )
    api_key_rotation_grace_seconds: int = setting(
        "API_KEY_ROTATION_GRACE_SECONDS", _int, "86400", help="how long a rotated API key keeps working"
    )
    login_attempts_per_account: int = setting(
        "LOGIN_ATTEMPTS_PER_ACCOUNT",
        _positive_int,
        "5",
        help="failed logins per account per window before 429",
    )
    login_attempts_per_ip: int = setting(
        "LOGIN_ATTEMPTS_PER_IP", _positive_int, "30", help="failed logins per client IP per window before 429"
    )
    login_throttle_window_seconds: int = setting(
        "LOGIN_THROTTLE_WINDOW_SECONDS", _positive_int, "900", help="the login throttling window"
    )
    smtp_host: str = setting("SMTP_HOST", _str, "127.0.0.1", help="SMTP server for the service's own mail")
    smtp_port: int = setting("SMTP_PORT", _positive_int, "1025", help="SMTP port (dev's sandbox: 1025)")
    smtp_tls: str = setting(
        "SMTP_TLS", _choice("none", "starttls", "tls"), "none", help="none, starttls or tls (implicit)"
    )
    smtp_username: str | None = setting("SMTP_USERNAME", _str, help="SMTP login, if the server wants one")
    smtp_password: str | None = setting("SMTP_PASSWORD", _str, secret=True, help="SMTP password")
    mail_from: str = setting(
        "MAIL_FROM", _str, "Poindexter Cloud <no-reply@poindexter.ai>", help="From: of the service's own mail"
    )

    sandbox_url: str = setting(
        "SANDBOX_URL",
        _http_url,
        "http://127.0.0.1:8002",
        help="the sandbox providers (development and tests only)",
    )
    proxy_upstreams: str | None = setting(
        "PROXY_UPSTREAMS",
        _upstreams,
        secret=True,
        production_required_by=frozenset({Role.PROXY}),
        help="JSON list of AI providers (see proxy/upstreams.py); default: the sandbox's",
    )
    proxy_connect_timeout_seconds: float = setting(
        "PROXY_CONNECT_TIMEOUT_SECONDS", _float, "5", help="connecting to an upstream provider"
    )
    proxy_read_timeout_seconds: float = setting(
        "PROXY_READ_TIMEOUT_SECONDS", _float, "600", help="longest silence from an upstream mid-response"
    )
    proxy_max_attempts: int = setting(
        "PROXY_MAX_ATTEMPTS",
        _positive_int,
        "3",
        help="upstream attempts per request (retries happen before the first byte)",
    )
    proxy_max_body_bytes: int = setting(
        "PROXY_MAX_BODY_BYTES",
        _positive_int,
        str(32 * 1024 * 1024),
        help="largest request body the proxy accepts",
    )
    proxy_breaker_failures: int = setting(
        "PROXY_BREAKER_FAILURES",
        _positive_int,
        "5",
        help="consecutive failures that open an upstream key's circuit",
    )
    proxy_breaker_open_seconds: float = setting(
        "PROXY_BREAKER_OPEN_SECONDS", _float, "30", help="how long an open circuit skips its upstream key"
    )

    stripe_secret_key: str | None = setting(
        "STRIPE_SECRET_KEY",
        _stripe_secret_key,
        "sk_test_sandbox",
        secret=True,
        required_by=frozenset({Role.WEB, Role.WORKER}),
        dev_only_default=True,
        help="Stripe secret (or restricted) API key; default: the sandbox's, refused in production",
    )
    stripe_webhook_secret: str | None = setting(
        "STRIPE_WEBHOOK_SECRET",
        _str,
        "whsec_sandbox",
        secret=True,
        required_by=frozenset({Role.WEB, Role.WORKER}),
        dev_only_default=True,
        help="signing secret of the Stripe webhook endpoint (whsec_...)",
    )
    stripe_api_base: str | None = setting(
        "STRIPE_API_BASE",
        _http_url,
        help="Stripe API base URL; default: Stripe itself in production, the sandbox's simulator elsewhere",
    )
    deprovision_grace_days: int = setting(
        "DEPROVISION_GRACE_DAYS",
        _non_negative_int,
        "7",
        help="days after a subscription ends before its identity is deprovisioned",
    )

    google_workspace_domain: str = setting(
        "GOOGLE_WORKSPACE_DOMAIN",
        _domain,
        "dex.sandbox.test",
        required_by=IDENTITY_ROLES,
        dev_only_default=True,
        help="the Workspace domain of the subscribers' mailboxes (dex-{id}@domain); default: the sandbox's",
    )
    google_admin_email: str | None = setting(
        "GOOGLE_ADMIN_EMAIL",
        _email,
        production_required_by=frozenset({Role.WORKER}),  # the Directory: provisioning only
        help="the Workspace administrator the service account impersonates (default: admin@domain)",
    )
    google_service_account_json: str | None = setting(
        "GOOGLE_SERVICE_ACCOUNT_JSON",
        _json_object,
        secret=True,
        production_required_by=IDENTITY_ROLES,
        help="the service-account key (JSON) with domain-wide delegation; default: the sandbox's",
    )
    google_api_base: str | None = setting(
        "GOOGLE_API_BASE",
        _http_url,
        help="one base URL serving every Google API at its own path; default: Google itself or the sandbox",
    )
    telnyx_api_key: str | None = setting(
        "TELNYX_API_KEY",
        _telnyx_api_key,
        "KEYsandbox",
        secret=True,
        required_by=IDENTITY_ROLES,
        dev_only_default=True,
        help="Telnyx API v2 key (KEY...); default: the sandbox's, refused in production",
    )
    telnyx_api_base: str | None = setting(
        "TELNYX_API_BASE",
        _http_url,
        help="Telnyx API base URL, ending in /v2; default: Telnyx in production, the sandbox elsewhere",
    )
    telnyx_public_key: str | None = setting(
        "TELNYX_PUBLIC_KEY",
        _str,
        production_required_by=frozenset({Role.WEB}),
        help="the account's webhook public key (base64 Ed25519); default outside production: the sandbox's",
    )
    telnyx_messaging_profile_id: str | None = setting(
        "TELNYX_MESSAGING_PROFILE_ID",
        _str,
        help="the messaging profile our numbers join; default: 'Poindexter Cloud', made on first use",
    )
    telnyx_number_country: str = setting(
        "TELNYX_NUMBER_COUNTRY", _country, "US", help="country of the phone numbers bought"
    )
    telnyx_number_area_codes: tuple[str, ...] = setting(
        "TELNYX_NUMBER_AREA_CODES",
        _area_codes,
        "",
        help="area codes tried in order when buying a number (comma-separated); empty: any",
    )
    signal_api_url: str | None = setting(
        "SIGNAL_API_URL",
        _http_url,
        production_required_by=IDENTITY_ROLES,
        help="signal-cli-rest-api base URL; default outside production: the sandbox's simulator",
    )
    signal_profile_name: str = setting(
        "SIGNAL_PROFILE_NAME", _str, "Dex", help="the Signal profile name of every subscriber's account"
    )
    signal_registration_timeout_seconds: int = setting(
        "SIGNAL_REGISTRATION_TIMEOUT_SECONDS",
        _positive_int,
        "86400",
        help="how long Signal registration keeps retrying before the identity's Signal is marked failed",
    )
    identity_retention_days: int = setting(
        "IDENTITY_RETENTION_DAYS",
        _non_negative_int,
        "30",
        help="days a deprovisioned mailbox stays suspended before it is deleted (0: at once)",
    )
    identity_max_attachment_bytes: int = setting(
        "IDENTITY_MAX_ATTACHMENT_BYTES",
        _attachment_bytes,
        "4194304",
        help="the most bytes of attachments on one email or Signal message sent through the identity API",
    )

    @property
    def upstreams_json(self) -> str:
        from poindexter_cloud.proxy.upstreams import sandbox_upstreams

        return self.proxy_upstreams or sandbox_upstreams(self.sandbox_url)

    @property
    def stripe_api_base_url(self) -> str:
        """Where the Stripe SDK sends its requests: STRIPE_API_BASE if set, else Stripe itself in production
        and the sandbox's Stripe simulator everywhere else."""
        if self.stripe_api_base:
            return self.stripe_api_base
        return STRIPE_API_URL if self.is_production else f"{self.sandbox_url}/stripe"

    @property
    def google_api_base_url(self) -> str | None:
        """Where the Google SDK sends its API calls: GOOGLE_API_BASE if set, else None (Google's own
        endpoints) in production and the sandbox's simulator everywhere else."""
        if self.google_api_base:
            return self.google_api_base
        return None if self.is_production else f"{self.sandbox_url}/google"

    @property
    def google_admin(self) -> str:
        return self.google_admin_email or f"admin@{self.google_workspace_domain}"

    @property
    def telnyx_api_base_url(self) -> str:
        if self.telnyx_api_base:
            return self.telnyx_api_base
        return TELNYX_API_URL if self.is_production else f"{self.sandbox_url}/telnyx/v2"

    @property
    def telnyx_webhook_url(self) -> str:
        """Where a messaging profile we create sends its webhooks: the web role's receiver."""
        return f"{self.web_base_url}/webhooks/telnyx"

    @property
    def signal_api_base_url(self) -> str:
        if self.signal_api_url:
            return self.signal_api_url
        if self.is_production:
            raise ValueError("SIGNAL_API_URL is not set")
        return f"{self.sandbox_url}/signal"

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def api_key_prefix(self) -> str:
        """pk_live_ for production keys, pk_test_ everywhere else (sandbox providers)."""
        return "pk_live_" if self.is_production else "pk_test_"


SPECS: tuple[Spec, ...] = tuple(f.metadata["spec"] for f in fields(Settings))
SPECS_BY_ENV = {spec.env: spec for spec in SPECS}


@dataclass(frozen=True, slots=True)
class Problem:
    env: str
    message: str

    def __str__(self) -> str:
        return f"{self.env}: {self.message}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """How one setting was resolved, for ``config check``."""

    spec: Spec
    source: str  # "env", "default" or "unset"
    value: Any

    def shown(self) -> str:
        if self.value is None:
            return "-"
        return mask(str(self.value)) if self.spec.secret else str(self.value)


def mask(value: str) -> str:
    """Enough to recognise a secret, never enough to use it."""
    if "://" in value:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://***@{host}{port}{parts.path}" if parts.password or parts.username else value
    return "***" if len(value) < 12 else f"{value[:4]}***{value[-2:]}"


@dataclass(frozen=True, slots=True)
class Loaded:
    settings: Settings
    resolved: tuple[Resolved, ...]
    problems: tuple[Problem, ...]


def load(environ: Mapping[str, str] | None = None, role: Role | None = None) -> Loaded:
    """Parse every setting; collect, rather than raise, what is missing or malformed for ``role``."""
    env = os.environ if environ is None else environ
    production = env.get("ENVIRONMENT", "").strip().lower() == "production"
    needed = SERVER_ROLES if role in (None, Role.ALL) else frozenset({role})
    values: dict[str, Any] = {}
    resolved: list[Resolved] = []
    problems: list[Problem] = []
    for spec in SPECS:
        raw = env.get(spec.env)
        source = "env"
        if raw is None or raw == "":
            raw, source = spec.default, "default"
        if production and source == "default" and spec.dev_only_default:
            raw, source = None, "unset"
        value = None
        if raw is None:
            source = "unset"
            required = spec.required_by | (spec.production_required_by if production else frozenset())
            if required & needed:
                problems.append(Problem(spec.env, "is required but not set"))
        else:
            try:
                value = spec.parse(raw)
            except SettingError as exc:
                problems.append(Problem(spec.env, str(exc)))
        values[spec.attr] = value
        resolved.append(Resolved(spec, source, value))
    return Loaded(Settings(**values), tuple(resolved), tuple(problems))


class InvalidSettings(Exception):
    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        names = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{names}")


def load_or_raise(role: Role | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    loaded = load(environ, role)
    if loaded.problems:
        raise InvalidSettings(loaded.problems)
    return loaded.settings
