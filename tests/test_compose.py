"""docker-compose.yml must stay in step with the settings it sets."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def compose_variables():
    text = (ROOT / "docker-compose.yml").read_text()
    return set(re.findall(r"^\s+((?:POSTERN|DATABASE|CELERY)_[A-Z_]+):", text, re.M))


def test_every_variable_in_compose_is_a_setting():
    settings_text = (ROOT / "relay" / "settings.py").read_text()
    variables = compose_variables()
    assert "DATABASE_URL" in variables and "POSTERN_MASTER_KEY_FILE" in variables
    for name in variables:
        read_as = name.removesuffix("_FILE")
        assert f'"{read_as}"' in settings_text, (
            f"{name} is not read by relay/settings.py"
        )


@pytest.mark.skipif(
    not shutil.which("docker-compose"),
    reason="docker-compose is not installed (.ci/run installs it)",
)
def test_compose_file_is_valid(tmp_path):
    for name in ("docker-compose.yml", "Dockerfile"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    for secret in (
        "secret_key",
        "master_key",
        "db_password",
        "tls/cert.pem",
        "tls/key.pem",
    ):
        path = tmp_path / "secrets" / secret
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("placeholder\n")
    done = subprocess.run(
        ["docker-compose", "config", "-q"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
