"""Settings for the benchmark server: the real settings plus a baseline view's URLs.

Everything else (database, broker, secrets) comes from the environment that
`bench/ingest.py` sets for gunicorn, exactly as in a deployment.
"""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
DEBUG = False
