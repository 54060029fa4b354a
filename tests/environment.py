"""Loaded as a pytest plugin (-p tests.environment) so that these variables
are set before pytest-django reads the settings."""

import os

os.environ.setdefault("POSTERN_SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("POSTERN_MASTER_KEY", "tests-only-master-key")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postern")
os.environ.setdefault("POSTERN_REDIS_URL", "redis://127.0.0.1:6379")
