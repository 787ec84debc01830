"""Settings, all read from the environment with safe embedded defaults.

With no environment at all the service runs on SQLite with Celery tasks executed
in-process (the embedded default used by `make demo`). Production sets
DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis).
"""

import os
import warnings
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG")
# The fallback key only exists so the embedded demo and tests run without set-up;
# production must set DJANGO_SECRET_KEY (checked by `manage.py check --deploy`).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-dev-only-key-set-DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served from here instead of a CDN
    "billing_events",
    "dunning",
    "entitlements",
    "simulation",  # a tool over the service (manage.py simulate), no product app imports it
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's, Swagger UI's) from the app itself under gunicorn.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        # A persistent connection that PostgreSQL dropped (a restart, a failover) is
        # replaced at the start of the next request instead of failing it.
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
LANGUAGES = [("en", "English"), ("fr", "Français")]
LOCALE_PATHS = [BASE_DIR / "dunning" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed copies at collectstatic (the Docker image runs it). Not the manifest
    # variant: without collectstatic (`make web`, the tests) every page would fail.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the apps when collectstatic has not run (`make web`); then
# STATIC_ROOT does not exist, which is expected, not worth a warning at every start.
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# OpenAPI schema at /api/schema/, docs at /api/docs/ (both readable without a token).
SPECTACULAR_SETTINGS = {
    "TITLE": "Dunning service API",
    "DESCRIPTION": "NinjaPanel's support API and the service's other endpoints. "
    "Authenticate with `Authorization: Token <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from drf-spectacular-sidecar's static files, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -----------------------------------------------------------------
# No broker configured means the embedded default: tasks run in-process.
CELERY_TASK_ALWAYS_EAGER = env_bool(
    "CELERY_TASK_ALWAYS_EAGER", not os.environ.get("CELERY_BROKER_URL")
)
# kombu's in-memory transport stands in when no broker is configured (embedded default).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "memory://"
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# acks_late needs a visibility timeout longer than any task; a publish must fail fast
# when the broker is down (the stored row is the truth and the sweeper re-enqueues it).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
# Celery's Django fix-up closes every database connection before and after every task
# unless told to reuse it: a new PostgreSQL backend, and the snapshot's statement prepared
# again, for every task. A worker keeps its connection instead, and between tasks checks
# its age (DATABASE_CONN_MAX_AGE) and health as Django does between requests
# (`config.celery`); this only bounds how many tasks one connection may serve.
CELERY_DB_REUSE_MAX = int(os.environ.get("CELERY_DB_REUSE_MAX", "100000"))
CELERY_BEAT_SCHEDULE = {
    "sweep-webhook-events": {
        "task": "dunning.intake.tasks.sweep_webhook_events",
        "schedule": float(os.environ.get("WEBHOOK_SWEEP_SECONDS", "1")),
    },
    "dispatch-outbox": {
        "task": "dunning.tasks.dispatch_outbox",
        "schedule": float(os.environ.get("OUTBOX_DISPATCH_SECONDS", "5")),
    },
    "detect-drift": {
        "task": "dunning.tasks.detect_drift",
        "schedule": float(os.environ.get("DRIFT_SCAN_SECONDS", "600")),
    },
    "redrive-stuck-lifting": {
        "task": "dunning.tasks.redrive_stuck_lifting",
        "schedule": float(os.environ.get("STUCK_SCAN_SECONDS", "300")),
    },
    "recompute-due-cases": {
        "task": "dunning.tasks.recompute_due_cases",
        "schedule": float(os.environ.get("CASE_REVIEW_SECONDS", "60")),
    },
}
# The backstop for missed webhooks (billing_events.polling); the task itself does nothing
# without STRIPE_API_KEY, and STRIPE_EVENT_POLL_SECONDS=0 takes it off the schedule.
STRIPE_EVENT_POLL_SECONDS = float(os.environ.get("STRIPE_EVENT_POLL_SECONDS", "300"))
if STRIPE_EVENT_POLL_SECONDS > 0:
    CELERY_BEAT_SCHEDULE["poll-stripe-events"] = {
        "task": "billing_events.tasks.poll_stripe_events",
        "schedule": STRIPE_EVENT_POLL_SECONDS,
    }

# --- Stripe -------------------------------------------------------------------
# Several secrets (comma-separated) are accepted while a webhook secret is rotated.
STRIPE_WEBHOOK_SECRETS = env_list("STRIPE_WEBHOOK_SECRET")
STRIPE_WEBHOOK_TOLERANCE_SECONDS = int(os.environ.get("STRIPE_WEBHOOK_TOLERANCE", "300"))
STRIPE_API_KEY = os.environ.get("STRIPE_API_KEY", "")
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "https://api.stripe.com")
STRIPE_API_TIMEOUT_SECONDS = float(os.environ.get("STRIPE_API_TIMEOUT_SECONDS", "10"))
# The polling backstop leaves events younger than this to their webhook.
STRIPE_EVENT_POLL_GRACE_SECONDS = int(os.environ.get("STRIPE_EVENT_POLL_GRACE_SECONDS", "600"))

# --- Webhook event processing -----------------------------------------------------
WEBHOOK_MAX_BODY_BYTES = int(os.environ.get("WEBHOOK_MAX_BODY_BYTES", str(512 * 1024)))
WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("WEBHOOK_MAX_ATTEMPTS", "8"))
# Once handed to a worker, an event is handed out again after this long if it is still
# not processed (the worker died, or the broker lost it).
WEBHOOK_REENQUEUE_AFTER_SECONDS = int(os.environ.get("WEBHOOK_REENQUEUE_AFTER_SECONDS", "60"))
# Hand each event to a worker from the request itself (a broker round trip per request)
# instead of leaving it to the event pump (beat, every WEBHOOK_SWEEP_SECONDS). On by
# default only with in-process tasks, where "handing over" is processing it right away.
WEBHOOK_ENQUEUE_ON_INGEST = env_bool("WEBHOOK_ENQUEUE_ON_INGEST", CELERY_TASK_ALWAYS_EAGER)

# --- Outbox and Account Management ----------------------------------------------------
OUTBOX_MAX_ATTEMPTS = int(os.environ.get("OUTBOX_MAX_ATTEMPTS", "12"))
# A side effect whose worker or task message was lost is claimed again after this.
OUTBOX_LEASE_SECONDS = int(os.environ.get("OUTBOX_LEASE_SECONDS", "60"))
ACCOUNT_MANAGEMENT_URL = os.environ.get("ACCOUNT_MANAGEMENT_URL", "")
ACCOUNT_MANAGEMENT_TIMEOUT_SECONDS = float(os.environ.get("ACCOUNT_MANAGEMENT_TIMEOUT", "5"))

# Subscribers to payment outcome events (signed webhooks, in order per account).
DUNNING_OUTCOME_WEBHOOK_URLS = env_list("DUNNING_OUTCOME_WEBHOOK_URLS")
DUNNING_OUTCOME_WEBHOOK_SECRET = os.environ.get("DUNNING_OUTCOME_WEBHOOK_SECRET", "")
DUNNING_OUTCOME_WEBHOOK_TIMEOUT_SECONDS = float(
    os.environ.get("DUNNING_OUTCOME_WEBHOOK_TIMEOUT", "5")
)

# Rollout of enforcement when no stage was ever set: "off" (shadow), "accounts", 5 ... "100".
# A fresh install runs in shadow for everyone; enforcing is an explicit, audited step.
DUNNING_ROLLOUT_DEFAULT_STAGE = os.environ.get("DUNNING_ROLLOUT_DEFAULT_STAGE", "off")

# Import (backfill) from Stripe: objects per list page (Stripe allows 1-100) and how much
# paid-invoice history the severity rules read.
STRIPE_IMPORT_PAGE_SIZE = int(os.environ.get("STRIPE_IMPORT_PAGE_SIZE", "100"))
STRIPE_IMPORT_PAID_HISTORY_DAYS = int(os.environ.get("STRIPE_IMPORT_PAID_HISTORY_DAYS", "365"))

# Drift detection and the stuck-in-lifting gauge.
DRIFT_GUARD_SECONDS = int(os.environ.get("DRIFT_GUARD_SECONDS", "900"))
LIFTING_STUCK_AFTER_SECONDS = int(os.environ.get("LIFTING_STUCK_AFTER_SECONDS", "3600"))

# --- Customer notices ---------------------------------------------------------------
# "email": sent through Django's email API (any backend: SMTP, django-anymail's SES,
# Postmark, SendGrid ...); "outcome_event": a `customer_notice.due` outcome event instead,
# for a company whose own messaging service writes to its customers.
DUNNING_NOTICE_CHANNEL = os.environ.get("DUNNING_NOTICE_CHANNEL", "email")
if DUNNING_NOTICE_CHANNEL not in {"email", "outcome_event"}:
    raise ValueError("DUNNING_NOTICE_CHANNEL must be email or outcome_event")
# Where a customer replaces a card ({stripe_customer_id} is filled in); empty: Stripe's
# hosted invoice page is the action wherever there is an invoice.
DUNNING_UPDATE_PAYMENT_METHOD_URL = os.environ.get("DUNNING_UPDATE_PAYMENT_METHOD_URL", "")
DUNNING_NOTICE_MESSAGE_ID_DOMAIN = os.environ.get("DUNNING_NOTICE_MESSAGE_ID_DOMAIN", "dunning")
# A directory of templates searched before the shipped ones (notices/<kind>.txt ...).
DUNNING_NOTICE_TEMPLATES_DIR = os.environ.get("DUNNING_NOTICE_TEMPLATES_DIR", "")
if DUNNING_NOTICE_TEMPLATES_DIR:
    TEMPLATES[0]["DIRS"] = [DUNNING_NOTICE_TEMPLATES_DIR]
# Django's own email settings, from the environment under Django's own names. With no
# EMAIL_HOST the messages are printed (the console backend: the embedded demo).
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL")
# Well under the outbox lease: a hung mail server never lets two workers send one message.
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "billing@localhost")
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)

# --- Clock ----------------------------------------------------------------------
DUNNING_TEST_CLOCK = env_bool("DUNNING_TEST_CLOCK")

# --- Logging ----------------------------------------------------------------------
# LOG_FORMAT=kv (default): `ts=... level=... logger=... message` lines; LOG_FORMAT=json: one
# JSON object per line (time, level, logger, message, extra fields). Either way the console
# handler masks card numbers and secrets (config.logging.RedactingFilter).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "kv").strip().lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "kv": {"format": "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "filters": {"redact": {"()": "config.logging.RedactingFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "kv",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The SDK logs whole response bodies at DEBUG, and a decline's body carries card
        # details (last4, expiry, fingerprint): never let LOG_LEVEL=DEBUG leak them.
        "stripe": {"level": "WARNING"},
        # With in-process tasks kombu's memory transport has no host, and says so.
        "kombu.connection": {"level": "ERROR" if CELERY_TASK_ALWAYS_EAGER else "WARNING"},
    },
}

# --- Sentry -------------------------------------------------------------------------
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
if SENTRY_DSN:
    from config.sentry import init_sentry

    init_sentry(SENTRY_DSN)
