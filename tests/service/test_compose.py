"""docker-compose.yml: valid for docker-compose (no engine needed) and wired to the service's settings."""
from __future__ import annotations

import shutil
import subprocess

import yaml

from service_stack import ROOT
from workers.settings import Settings

COMPOSE = ROOT / "docker-compose.yml"


def test_docker_compose_config_accepts_the_file():
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose (Debian's v1) is needed: apt-get install docker-compose (.ci/run installs it)"
    out = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_services_and_their_wiring():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"api", "worker-gpu", "worker-cpu", "redis", "postgres", "flower"}
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    assert services["worker-gpu"]["runtime"] == "nvidia"
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["worker-gpu"]["command"][:4] == ["nnverify", "worker", "--queues", "gpu"]
    assert services["worker-cpu"]["command"][:4] == ["nnverify", "worker", "--queues", "cpu"]
    for name in ("api", "worker-gpu", "worker-cpu"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        settings = Settings.from_env(env)   # every NNVERIFY_ variable names a real setting of the right type
        assert set(env) <= {f"NNVERIFY_{f.upper()}" for f in Settings.__dataclass_fields__}
        assert settings.database_url.startswith("postgresql+psycopg://") and "redis:6379" in settings.broker_url
        assert settings.visibility_timeout > settings.max_timeout
