"""infra/: the Kubernetes manifests against Kubernetes' own schemas (kubernetes-validate, strict, the schemas it
ships: no network), compose.yaml against the compose spec (vendored in check-jsonschema), and the pieces
fitting together: probes, drain and grace period, selectors, the HPA's metric, settings that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from telebridge.settings import Settings

INFRA = Path(__file__).resolve().parents[1] / "infra"
K8S = INFRA / "k8s"
K8S_VERSION = "1.31.0"  # a release kubernetes-validate 1.31–1.37 all ship schemas for (pyproject's dev extra)
UVICORN_SHUTDOWN = 5  # telebridge.server: timeout_graceful_shutdown after the drain


def manifests() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def setting_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"TELEBRIDGE_{name.upper()}")
        alias = field.validation_alias
        names.update(n for n in getattr(alias, "choices", []) if isinstance(n, str))
    return names


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_schemas(path):
    import kubernetes_validate

    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError with the path


def test_compose_file_matches_the_compose_spec():
    cli = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    done = subprocess.run([cli, "--builtin-schema", "vendor.compose-spec", str(INFRA / "compose.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_deployment_drains_before_it_is_killed():
    docs = manifests()
    config = docs[("ConfigMap", "telebridge-config")]["data"]
    pod = docs[("Deployment", "telebridge")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"  # 503 while draining
    assert "httpGet" not in container["livenessProbe"]  # a draining pod must not be restarted
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(config["TELEBRIDGE_DRAIN_TIMEOUT"])
    assert drain == Settings.model_fields["drain_timeout"].default
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain + UVICORN_SHUTDOWN
    strategy = docs[("Deployment", "telebridge")]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_secrets_come_from_the_secret_and_settings_exist():
    docs = manifests()
    container = docs[("Deployment", "telebridge")]["spec"]["template"]["spec"]["containers"][0]
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"configMapRef": "telebridge-config", "secretRef": "telebridge-secrets"}
    assert all("value" not in e for e in container.get("env", []))  # no literal values in the pod spec
    secret = docs[("Secret", "telebridge-secrets")]["stringData"]
    config = docs[("ConfigMap", "telebridge-config")]["data"]
    assert {"TWILIO_AUTH_TOKEN", "TELEBRIDGE_API_KEYS", "REDIS_URL"} <= set(secret)
    assert not {"TWILIO_AUTH_TOKEN", "TELEBRIDGE_API_KEYS", "REDIS_URL"} & set(config)
    known = setting_names()
    unknown = [k for k in [*secret, *config, *(e["name"] for e in container.get("env", []))] if k not in known]
    assert not unknown, unknown
    Settings(_env_file=None, **{k.removeprefix("TELEBRIDGE_").lower(): v for k, v in config.items()
                                if v != ""})  # the values validate too


def test_service_ingress_pdb_and_hpa_point_at_the_pods():
    docs = manifests()
    deployment = docs[("Deployment", "telebridge")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    service = docs[("Service", "telebridge")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    backend = docs[("Ingress", "telebridge")]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "telebridge" and backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    annotations = docs[("Ingress", "telebridge")]["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600  # a long call's WebSocket
    assert docs[("PodDisruptionBudget", "telebridge")]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = docs[("HorizontalPodAutoscaler", "telebridge")]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "telebridge"}
    metric = hpa["metrics"][0]["pods"]["metric"]["name"]
    assert metric == "telebridge_calls_active" and hpa["minReplicas"] >= 2
    from telebridge.metrics import CALLS_ACTIVE

    assert CALLS_ACTIVE._name == metric  # the series telebridge exports
    rules = yaml.safe_load(docs[("ConfigMap", "prometheus-adapter-telebridge")]["data"]["config.yaml"])
    assert rules["rules"][0]["name"]["as"] == metric and metric in rules["rules"][0]["seriesQuery"]
    redis = docs[("Service", "telebridge-redis")]
    assert docs[("Secret", "telebridge-secrets")]["stringData"]["REDIS_URL"].startswith(
        f"redis://{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/")


def test_compose_runs_two_instances_on_one_redis_behind_a_websocket_proxy():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    instances = [s for name, s in services.items() if name.startswith("telebridge-")]
    assert len(instances) == 2
    known = setting_names()
    drain = Settings.model_fields["drain_timeout"].default
    for service in instances:
        env = service["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:") and "redis" in service["depends_on"]
        assert float(env["TELEBRIDGE_DRAIN_TIMEOUT"]) == drain
        assert int(service["stop_grace_period"].rstrip("s")) > drain + UVICORN_SHUTDOWN
        assert not [k for k in env if k not in known]
        proxy_ip = services["caddy"]["networks"]["telebridge"]["ipv4_address"]
        assert env["TELEBRIDGE_TRUSTED_PROXIES"] == proxy_ip
    assert {e["TELEBRIDGE_INSTANCE_ID"] for e in (s["environment"] for s in instances)} == {
        "telebridge-a", "telebridge-b"}
    caddyfile = (INFRA / "Caddyfile").read_text()
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", caddyfile).group(1).split()
    assert sorted(upstreams) == ["telebridge-a:8000", "telebridge-b:8000"]
    assert "health_uri /healthz" in caddyfile
