"""Settings for the test suite: the real PostgreSQL and Redis on this machine.

Override with DATABASE_URL / CELERY_BROKER_URL like any other deployment.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dunning")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "false")
os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_test_current,whsec_test_previous")
os.environ.setdefault("SENTRY_DSN", "")
# Production starts in shadow (off); the suite exercises enforcement unless a test sets the
# stage itself (tests/test_rollout.py checks the shadow-first default of a fresh install).
os.environ.setdefault("DUNNING_ROLLOUT_DEFAULT_STAGE", "100")

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
