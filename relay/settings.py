"""Postern settings: every value comes from an environment variable.

The defaults need no server at all (SQLite, a file-system broker), so that the
run command works on a bare machine; production sets DATABASE_URL and
CELERY_BROKER_URL.
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from relay.env import (
    env_bool,
    env_hostport,
    env_int,
    env_secret,
    env_str,
    env_transport_map,
    parse_hostport,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("POSTERN_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("POSTERN_DEBUG", False)
SECRET_KEY = env_secret("POSTERN_SECRET_KEY")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "POSTERN_SECRET_KEY (or POSTERN_SECRET_KEY_FILE) must be set; bin/dev "
        "creates one under var/"
    )
# Encrypts DKIM private keys and other secrets at rest; see relay/secretbox.py.
MASTER_KEY = env_secret("POSTERN_MASTER_KEY")
if not MASTER_KEY:
    raise ImproperlyConfigured(
        "POSTERN_MASTER_KEY (or POSTERN_MASTER_KEY_FILE) must be set; bin/dev "
        "creates one under var/"
    )

ALLOWED_HOSTS = [
    h.strip()
    for h in env_str("POSTERN_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "relay",
    "tenants",
    "policies",
    "portal",
    "smtp_gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "relay.urls"
WSGI_APPLICATION = "relay.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'postern.sqlite3'}"),
        conn_max_age=env_int("POSTERN_DB_CONN_MAX_AGE", 60),
    )
}
if env_secret("POSTERN_DATABASE_PASSWORD"):
    DATABASES["default"]["PASSWORD"] = env_secret("POSTERN_DATABASE_PASSWORD")
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Gateway, workers and portal write to one SQLite file from three
    # processes; wait for the lock instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}

# Broker. The default "filesystem" transport needs no server and is meant for
# the run command on one machine; production uses Redis.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
    }
CELERY_TASK_DEFAULT_QUEUE = env_str("POSTERN_QUEUE", "postern")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery otherwise closes the database connection around every task, and a new
# PostgreSQL connection per task was the largest single cost of a message.
CELERY_DB_REUSE_MAX = env_int("POSTERN_DB_REUSE_MAX", 1000)
# How often the sweeper looks for accepted messages whose task was lost and
# for deferred recipients that are due.
POSTERN_SWEEP_INTERVAL = env_int("POSTERN_SWEEP_INTERVAL", 30)
# A message still unprocessed this long after intake is enqueued again.
POSTERN_STALE_AFTER = env_int("POSTERN_STALE_AFTER", 60)

# SMTP gateway.
GATEWAY_HOSTNAME = env_str("POSTERN_HOSTNAME", "localhost")
GATEWAY_SUBMISSION = env_hostport("POSTERN_SUBMISSION_LISTEN", "127.0.0.1:2587", 587)
GATEWAY_MAX_MESSAGE_SIZE = env_int("POSTERN_MAX_MESSAGE_SIZE", 25 * 1024 * 1024)
GATEWAY_MAX_RECIPIENTS = env_int("POSTERN_MAX_RECIPIENTS", 100)
TLS_CERT_FILE = env_str("POSTERN_TLS_CERT", str(VAR_DIR / "tls" / "cert.pem"))
TLS_KEY_FILE = env_str("POSTERN_TLS_KEY", str(VAR_DIR / "tls" / "key.pem"))
# Implicit TLS ("submissions", RFC 8314 section 3.3; 465 in production).
# Empty disables that listener.
_submissions = env_str("POSTERN_SUBMISSIONS_LISTEN").strip()
GATEWAY_SUBMISSIONS = (
    parse_hostport("POSTERN_SUBMISSIONS_LISTEN", _submissions, 465)
    if _submissions
    else None
)
# A session idle this long, or open this long in all, is closed with 421.
GATEWAY_IDLE_TIMEOUT = env_int("POSTERN_SMTP_IDLE_TIMEOUT", 300)
GATEWAY_SESSION_TIMEOUT = env_int("POSTERN_SMTP_SESSION_TIMEOUT", 1800)
# On SIGTERM, transactions in flight get this long to finish.
GATEWAY_SHUTDOWN_GRACE = env_int("POSTERN_SHUTDOWN_GRACE", 30)
# Expect a PROXY protocol v1/v2 header from a TCP load balancer first.
GATEWAY_PROXY_PROTOCOL = env_bool("POSTERN_PROXY_PROTOCOL", False)
# Counters shared by gateway processes (rate limits, AUTH failures). Default:
# the broker's Redis; empty, or a broker that is not Redis: in-process.
_broker_is_redis = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
GATEWAY_COUNTERS_URL = env_str(
    "POSTERN_COUNTERS_REDIS_URL", CELERY_BROKER_URL if _broker_is_redis else ""
)
# Platform defaults for a credential's empty limit fields; 0: no limit.
GATEWAY_DEFAULT_LIMITS = {
    "messages_per_minute": env_int("POSTERN_MESSAGES_PER_MINUTE", 0),
    "messages_per_hour": env_int("POSTERN_MESSAGES_PER_HOUR", 0),
    "messages_per_day": env_int("POSTERN_MESSAGES_PER_DAY", 0),
    "bytes_per_hour": env_int("POSTERN_BYTES_PER_HOUR", 0),
    "bytes_per_day": env_int("POSTERN_BYTES_PER_DAY", 0),
}
GATEWAY_MAX_CONNECTIONS = env_int("POSTERN_MAX_CONNECTIONS_PER_CREDENTIAL", 20)
# AUTH failures: slowed after SLOW_AFTER, blocked after BLOCK_AFTER within
# the window, for BLOCK_SECONDS.
GATEWAY_AUTH_WINDOW = env_int("POSTERN_AUTH_FAILURE_WINDOW", 900)
GATEWAY_AUTH_SLOW_AFTER = env_int("POSTERN_AUTH_SLOW_AFTER", 3)
GATEWAY_AUTH_BLOCK_AFTER = env_int("POSTERN_AUTH_BLOCK_AFTER", 10)
GATEWAY_AUTH_BLOCK_SECONDS = env_int("POSTERN_AUTH_BLOCK_SECONDS", 900)
GATEWAY_AUTH_MAX_DELAY = env_int("POSTERN_AUTH_MAX_DELAY", 5)

# DNS. Empty means the system resolver.
DNS_RESOLVER = env_str("POSTERN_DNS_RESOLVER", "")
DNS_TIMEOUT = env_int("POSTERN_DNS_TIMEOUT", 5)

# Outbound delivery.
DELIVERY_PORT = env_int("POSTERN_DELIVERY_PORT", 25)
DELIVERY_TIMEOUT = env_int("POSTERN_DELIVERY_TIMEOUT", 60)
DELIVERY_HELO = env_str("POSTERN_DELIVERY_HELO", GATEWAY_HOSTNAME)
# Retry schedule: the first retry after this many seconds, doubling each time,
# capped at DELIVERY_MAX_BACKOFF, until the message is DELIVERY_GIVE_UP old.
DELIVERY_FIRST_RETRY = env_int("POSTERN_DELIVERY_FIRST_RETRY", 300)
DELIVERY_MAX_BACKOFF = env_int("POSTERN_DELIVERY_MAX_BACKOFF", 4 * 3600)
DELIVERY_GIVE_UP = env_int("POSTERN_DELIVERY_GIVE_UP", 5 * 24 * 3600)
# For local development only: domain (or "*") -> host:port, bypassing MX.
TRANSPORT_OVERRIDES = env_transport_map("POSTERN_TRANSPORT_OVERRIDES")
# Several messages for one domain share one SMTP session, up to this many.
DELIVERY_MESSAGES_PER_SESSION = env_int("POSTERN_DELIVERY_MESSAGES_PER_SESSION", 50)
# Work is claimed in batches: a worker processes up to PROCESSING_BATCH
# received messages at once, and delivers up to DELIVERY_BATCH messages for
# one domain before recording their outcomes together. Larger batches cost
# fewer database round trips; a worker killed mid-batch leaves up to
# DELIVERY_BATCH messages whose replies were not recorded (shown unconfirmed).
# A session a delivery run ends cleanly waits this many seconds for the next
# run to the same destination in the same worker process (0: close at once);
# see relay/session_cache.py.
DELIVERY_SESSION_IDLE = env_int("POSTERN_DELIVERY_SESSION_IDLE", 5, minimum=0)
PROCESSING_BATCH = env_int("POSTERN_PROCESSING_BATCH", 20, minimum=1)
DELIVERY_BATCH = env_int("POSTERN_DELIVERY_BATCH", 20, minimum=1)
# Per recipient domain, unless a DestinationPolicy says otherwise: open
# connections at a time, and messages per minute (0: no limit).
DESTINATION_MAX_CONNECTIONS = env_int("POSTERN_DESTINATION_MAX_CONNECTIONS", 5)
DESTINATION_MESSAGES_PER_MINUTE = env_int("POSTERN_DESTINATION_MESSAGES_PER_MINUTE", 0)
# A delivery put off by those limits is tried again after this many seconds.
DESTINATION_RETRY = env_int("POSTERN_DESTINATION_RETRY", 30)
# Wait for the reply to the end of data this long: RFC 5321 section
# 4.5.3.2.6 asks for 10 minutes, since giving up earlier invites duplicates.
DELIVERY_DATA_TIMEOUT = env_int("POSTERN_DELIVERY_DATA_TIMEOUT", 600)
# A recipient claimed longer ago than this belongs to a delivery run that
# died. It must outlast the longest a live run holds one batch: connecting and
# a few commands (DELIVERY_TIMEOUT each) plus the end-of-data wait.
DELIVERY_CLAIM_LEASE = env_int("POSTERN_DELIVERY_CLAIM_LEASE", 900)
# A destination connection slot held longer than this belongs to a run that
# died; it is then free again.
DESTINATION_SLOT_LEASE = env_int("POSTERN_DESTINATION_SLOT_LEASE", 600)
# CA bundle for verifying MX certificates where TLS is required (empty: the
# system's store).
DELIVERY_CA_FILE = env_str("POSTERN_DELIVERY_CA_FILE", "")
# MTA-STS policy fetch (RFC 8461 section 3.3): HTTPS port and CA bundle.
MTA_STS_PORT = env_int("POSTERN_MTA_STS_PORT", 443)
MTA_STS_CA_FILE = env_str("POSTERN_MTA_STS_CA_FILE", "")
# DANE (RFC 7672): "auto" trusts the AD bit only from a resolver on loopback
# (see relay/dane.py); "on" trusts POSTERN_DNS_RESOLVER wherever it is.
DANE = env_str("POSTERN_DANE", "auto").strip().lower()
if DANE not in ("auto", "on", "off"):
    raise ImproperlyConfigured("POSTERN_DANE must be auto, on or off")
# Return path: empty keeps the client's envelope sender; a domain gives each
# message its own bounce address there (bounces+QUEUEID@domain), so that
# asynchronous bounces can be tied to the message.
RETURN_PATH_DOMAIN = env_str("POSTERN_RETURN_PATH_DOMAIN", "").lower()
# The listener that takes asynchronous bounces and complaints for that domain.
BOUNCE_LISTEN = env_hostport("POSTERN_BOUNCE_LISTEN", "127.0.0.1:2526", 25)
# Webhooks: time-out per post, and how long a failing post is retried.
WEBHOOK_TIMEOUT = env_int("POSTERN_WEBHOOK_TIMEOUT", 10)
WEBHOOK_GIVE_UP = env_int("POSTERN_WEBHOOK_GIVE_UP", 24 * 3600)

# The development sink: an SMTP server standing in for the outside world.
DEV_SINK_DIR = Path(env_str("POSTERN_DEV_SINK_DIR", str(VAR_DIR / "sink")))
DEV_SINK_ENABLED = env_bool("POSTERN_DEV_SINK", False)

# DKIM.
DKIM_DEFAULT_ALGORITHM = env_str("POSTERN_DKIM_ALGORITHM", "rsa")
if DKIM_DEFAULT_ALGORITHM not in ("rsa", "ed25519"):
    raise ImproperlyConfigured("POSTERN_DKIM_ALGORITHM must be rsa or ed25519")

# Onboarding. What a tenant's SPF record must name for Postern to be
# authorised: an include domain and/or the addresses Postern sends from.
SPF_INCLUDE = env_str("POSTERN_SPF_INCLUDE", "")
SPF_ADDRESSES = [
    a.strip() for a in env_str("POSTERN_SPF_ADDRESSES", "").split(",") if a.strip()
]
# Seconds between re-checks of every domain's verification record.
DOMAIN_REVERIFY_INTERVAL = env_int("POSTERN_DOMAIN_REVERIFY_INTERVAL", 3600)
# Days a DKIM key replaced by a rotation must stay published.
DKIM_ROTATION_GRACE_DAYS = env_int("POSTERN_DKIM_ROTATION_GRACE_DAYS", 7)
INVITATION_VALID_DAYS = env_int("POSTERN_INVITATION_VALID_DAYS", 7)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "kv": {
            "format": "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "kv"}},
    "root": {"handlers": ["console"], "level": env_str("POSTERN_LOG_LEVEL", "INFO")},
    "loggers": {
        "mail.log": {"level": "ERROR"},
        "aiosmtpd": {"level": "WARNING"},
        # One line per task received and done, and per beat tick, would bury
        # Postern's own event lines.
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.beat": {"level": "WARNING"},
    },
}
