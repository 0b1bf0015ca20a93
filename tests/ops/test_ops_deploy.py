"""deploy/: compose, Dockerfile, Kubernetes and Grafana files, validated as far as this
machine allows (no Docker engine, no cluster): parsed, cross-checked against each other and
against the settings the services read. ``kubectl kustomize`` renders the manifests where
kubectl is installed."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from services.cli.run import SERVICES as RUNNABLE
from services.common.settings import Settings
from tests.ops.ops_support import DEPLOY, ROOT, need_tool

# The services that exist in this tree: `reminders run` names a service before its package
# lands, and a deployment cannot run a service that is not there yet.
SERVICES = {
    name: module
    for name, module in RUNNABLE.items()
    if importlib.util.find_spec(module.rpartition(".")[0]) is not None
}

COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
METRICS_PORT = 9400
# The web doors serve their pages or API, /healthz, /readyz and /metrics on their own port
# (REMINDERS_ADMIN__PORT, REMINDERS_GATEWAY__PORT); the Kafka services on METRICS_PORT.
DOOR_PORTS = {"practice-admin": 8080, "his-gateway": 8081}
# The secrets the doors need: never a value in a deployment file.
DOOR_SECRETS = {
    "practice-admin": "REMINDERS_ADMIN__SECRET_KEY",
    "his-gateway": "REMINDERS_GATEWAY__TOKEN_SECRET",
}
# The services with tables in the shared database.
DB_USERS = {"insights", "practice-admin", "his-gateway"}
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")
# What the tests put in for a required variable (`${NAME:?message}`).
REQUIRED = "required-from-the-environment-{}"


def _port(name: str) -> int:
    return DOOR_PORTS.get(name, METRICS_PORT)


def _interpolate(match: re.Match[str]) -> str:
    if match.group(2) and match.group(2).endswith("?"):
        return REQUIRED.format(match.group(1).lower())
    return match.group(3) or ""


def _compose() -> dict[str, Any]:
    text = COMPOSE.read_text(encoding="utf-8")
    # Compose interpolation, as `docker compose config` would do it with only the required
    # variables set: defaults for the others.
    text = _INTERPOLATION.sub(_interpolate, text)
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def _settings_field(name: str) -> str | None:
    """None if REMINDERS_<SECTION>__<FIELD> names a setting, else what is wrong with it."""
    if not name.startswith("REMINDERS_"):
        return f"{name}: settings start with REMINDERS_"
    model: type[BaseModel] = Settings
    parts = name.removeprefix("REMINDERS_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return f"{name}: {part!r} is not a field of {model.__name__}"
        annotation = field.annotation
        last = i == len(parts) - 1
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if nested and last:
            return f"{name}: {part!r} is a section, not a field"
        if not nested and not last:
            return f"{name}: {part!r} has no fields"
        if nested:
            assert isinstance(annotation, type)
            model = annotation
    return None


def _load_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    import os

    for key in list(os.environ):
        if key.startswith("REMINDERS_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def _str_env(env: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in env.items()}


# ----------------------------------------------------------------------------- compose


def test_compose_has_kafka_the_services_prometheus_and_a_mail_catcher() -> None:
    services = _compose()["services"]
    assert {"kafka", "topics", "prometheus", "mailpit", *SERVICES} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    # Transactions need their state topic to be creatable on one broker.
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    pom = (DEPLOY / "kafka" / "pom.xml").read_text(encoding="utf-8")
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert version is not None
    assert kafka["image"] == f"apache/kafka:{version.group(1)}", "same Kafka as kafka-local"


def test_compose_services_run_the_cli_with_valid_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    for name in [*SERVICES, "topics"]:
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (COMPOSE.parent / service["build"]["context"] / "deploy" / "Dockerfile").exists()
        if name in SERVICES:
            assert service["command"] == ["run", name]
            check = " ".join(service["healthcheck"]["test"])
            assert f"127.0.0.1:{_port(name)}/readyz" in check
        env = _str_env(service["environment"])
        problems = [p for p in map(_settings_field, env) if p]
        assert not problems, problems
        settings = _load_settings(env, monkeypatch)
        assert settings.kafka.bootstrap_servers == "kafka:9092"
        assert settings.metrics.host == "0.0.0.0"
        assert settings.metrics.port == METRICS_PORT
        assert settings.log_format == "json"
    notifier = _load_settings(_str_env(services["notifier"]["environment"]), monkeypatch)
    assert notifier.smtp.host == "mailpit"
    assert notifier.smtp.security == "none"
    assert "1025" in " ".join(services["mailpit"]["ports"])


def test_compose_doors_listen_on_their_port_published_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    for name, port in DOOR_PORTS.items():
        service = services[name]
        settings = _load_settings(_str_env(service["environment"]), monkeypatch)
        door = settings.admin if name == "practice-admin" else settings.gateway
        # Reachable from outside the container, but only through the host's loopback.
        assert (door.host, door.port) == ("0.0.0.0", port)
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    admin = _load_settings(_str_env(services["practice-admin"]["environment"]), monkeypatch)
    assert (admin.smtp.host, admin.smtp.port, admin.smtp.security) == ("mailpit", 1025, "none")
    # Cookies without Secure only for http on loopback, which is where the port is published.
    assert admin.admin.public_url == "http://127.0.0.1:8080"
    notifier = _load_settings(_str_env(services["notifier"]["environment"]), monkeypatch)
    # The notifier signs the one-click links with the key practice-admin checks them with.
    assert notifier.admin.secret_key == admin.admin.secret_key
    assert notifier.admin.public_url == admin.admin.public_url


def test_compose_secrets_are_required_variables_never_values() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for variable in [*DOOR_SECRETS.values(), "REMINDERS_POSTGRES_PASSWORD"]:
        uses = re.findall(rf"\$\{{{variable}(:?[-?])?[^}}]*\}}", text)
        assert uses and set(uses) == {":?"}, f"{variable} must be ${{{variable}:?...}}"
    services = _compose()["services"]
    for name, variable in DOOR_SECRETS.items():
        value = services[name]["environment"][variable]
        assert value == REQUIRED.format(variable.lower())


def test_compose_one_postgres_database_upgraded_before_its_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    upgrade = services["db-upgrade"]
    assert upgrade["command"] == ["db", "upgrade"]
    assert upgrade["restart"] == "no"
    assert upgrade["depends_on"]["postgres"]["condition"] == "service_healthy"
    urls = set()
    for name in ["db-upgrade", *DB_USERS]:
        settings = _load_settings(_str_env(services[name]["environment"]), monkeypatch)
        urls.add(settings.database.url.get_secret_value())
        if name != "db-upgrade":
            condition = services[name]["depends_on"]["db-upgrade"]["condition"]
            assert condition == "service_completed_successfully", name
    # One database: practice-admin's send log reads the projection insights writes.
    (url,) = urls
    assert url.startswith("postgresql+asyncpg://reminders:")
    assert url.endswith("@postgres:5432/reminders")
    assert postgres["environment"]["POSTGRES_PASSWORD"] in url


def test_compose_mounts_exist_and_prometheus_scrapes_the_compose_services() -> None:
    services = _compose()["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), volume
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        job = jobs[f"reminders-{name}"]
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert targets == [f"{name}:{_port(name)}"]
    assert (DEPLOY / "prometheus" / config["rule_files"][0]).exists()


def test_dockerfile_builds_the_package_and_runs_the_cli() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", text, re.MULTILINE)
    assert 'ENTRYPOINT ["reminders"]' in text
    for source in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for item in source.split():
            assert (ROOT / item).exists(), f"COPY {item}: not in the repository"
    assert re.search(r"^USER \d+", text, re.MULTILINE), "the image does not run as root"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert "!services/" in ignore and "!schemas/" in ignore


# ------------------------------------------------------------------------------ kubernetes


def test_k8s_deployments_probe_readyz_and_set_resources() -> None:
    docs = _k8s_docs()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {f"reminders-{name}" for name in SERVICES}
    for name in SERVICES:
        deployment = deployments[f"reminders-{name}"]
        pod = deployment["spec"]["template"]
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= pod["metadata"]["labels"].items()
        )
        (container,) = pod["spec"]["containers"]
        assert container["args"] == ["run", name]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        port_name = "http" if name in DOOR_PORTS else "metrics"
        assert ports == {port_name: _port(name)}
        readiness = container["readinessProbe"]["httpGet"]
        assert readiness["path"] == "/readyz" and readiness["port"] == port_name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert "memory" in resources["limits"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(_port(name))
        assert annotations["prometheus.io/path"] == "/metrics"


def test_k8s_doors_listen_on_their_port_with_secrets_from_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = _k8s_docs()
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for name, port in DOOR_PORTS.items():
        (container,) = deployments[f"reminders-{name}"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        for secret in (DOOR_SECRETS[name], "REMINDERS_DATABASE__URL"):
            ref = env[secret]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "reminders-secrets" and not ref.get("optional"), secret
        plain = {k: str(e["value"]) for k, e in env.items() if "value" in e}
        settings = _load_settings({**config_map["data"], **plain}, monkeypatch)
        door = settings.admin if name == "practice-admin" else settings.gateway
        assert (door.host, door.port) == ("0.0.0.0", port)
        (service_port,) = services[f"reminders-{name}"]["spec"]["ports"]
        assert service_port["targetPort"] == "http"
    # Every secret a Kafka service or a door reads comes from the Secret, never a value.
    for deployment in (d for d in docs if d["kind"] in ("Deployment", "Job")):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                if entry["name"] in {*DOOR_SECRETS.values(), "REMINDERS_DATABASE__URL"}:
                    assert "secretKeyRef" in entry["valueFrom"], entry["name"]


def test_k8s_every_deployment_has_a_pod_disruption_budget() -> None:
    docs = _k8s_docs()
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, deployment["metadata"]["name"]
        budget = covering[0]["spec"]
        assert "maxUnavailable" in budget or "minAvailable" in budget
        assert deployment["spec"]["replicas"] > budget.get("maxUnavailable", 0)


def test_k8s_env_names_and_values_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _k8s_docs()
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    data = config_map["data"]
    names = set(data)
    for deployment in (d for d in docs if d["kind"] in ("Deployment", "Job")):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        refs = {e["configMapRef"]["name"] for e in container.get("envFrom", [])}
        assert refs == {config_map["metadata"]["name"]}
        names |= {e["name"] for e in container.get("env", [])}
        assert container["image"] == "e-afspraken-reminders"
    problems = [p for p in map(_settings_field, sorted(names)) if p]
    assert not problems, problems
    settings = _load_settings(dict(data), monkeypatch)
    assert settings.metrics.port == METRICS_PORT
    assert settings.metrics.host == "0.0.0.0"


def test_k8s_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert [i["name"] for i in kustomization["images"]] == ["e-afspraken-reminders"]
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    assert "partition" in readme.lower()


def test_k8s_kustomize_renders() -> None:
    # kubectl ships with this project's machine image; in CI a missing one fails.
    kubectl = need_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout) if d]
    assert kinds.count("Deployment") == len(SERVICES)
    assert kinds.count("PodDisruptionBudget") == len(SERVICES)
    for doc in yaml.safe_load_all(result.stdout):
        if doc and doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "e-afspraken-reminders"


# ---------------------------------------------------------------------------------- grafana


def test_grafana_dashboard_and_provisioning() -> None:
    grafana = DEPLOY / "grafana"
    dashboard = json.loads((grafana / "dashboards" / "reminders.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in (
        "Events in",
        "Pending timers",
        "Reminders fired (per minute)",
        "Firing lateness",
        "Sent",
        "Suppressed by reason",
        "Dead-lettered",
    ):
        assert any(t.startswith(wanted) for t in titles), wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24
        mine = {(box["x"] + i, box["y"] + j) for i in range(box["w"]) for j in range(box["h"])}
        assert not mine & cells, f"panel {panel['title']} overlaps another"
        cells |= mine
    source = yaml.safe_load(
        (grafana / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    (datasource,) = source["datasources"]
    variable = dashboard["templating"]["list"][0]
    assert variable["current"]["value"] == datasource["uid"]
    provider = yaml.safe_load(
        (grafana / "provisioning" / "dashboards" / "reminders.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts


def test_dashboard_queries_use_catalogued_metrics(catalogue: dict[str, Any]) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "reminders.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"\b(reminders_[a-z0-9_]+)", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in catalogue or base in catalogue, (panel["title"], name)
