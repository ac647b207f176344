"""The deployment files parse and agree with turnout: the ConfigMap's config
passes turnout's own validation, probes use gRPC health on the served port,
the grace period covers the drain, and the secret comes from a Secret."""

from pathlib import Path

import yaml

from gateway import config as config_module

K8S = Path(__file__).parents[1] / "deploy/k8s"


def _documents() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            out[(document["kind"], document["metadata"]["name"])] = document
    return out


def test_every_manifest_parses_and_has_the_expected_objects():
    assert set(_documents()) == {
        ("ConfigMap", "turnout"), ("Deployment", "turnout"), ("Service", "turnout"),
        ("Deployment", "turnout-redis"), ("Service", "turnout-redis")}


def test_the_configmap_config_is_valid_and_matches_the_deployment():
    docs = _documents()
    config = config_module.parse(docs[("ConfigMap", "turnout")]["data"]["turnout.yaml"], {"CLOUD_KEY": "x"})
    pod = docs[("Deployment", "turnout")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert config.listen.endswith(f":{grpc_port}") and config.metrics_listen.endswith(f":{metrics_port}")
    assert container["readinessProbe"]["grpc"]["port"] == container["livenessProbe"]["grpc"]["port"] == grpc_port
    assert pod["terminationGracePeriodSeconds"] > config.shutdown_grace
    assert docs[("Deployment", "turnout")]["spec"]["replicas"] >= 2
    assert config.sessions.store == "redis" and "turnout-redis" in config.sessions.redis_url
    cloud_key = next(e for e in container["env"] if e["name"] == "CLOUD_KEY")
    assert cloud_key["valueFrom"]["secretKeyRef"]["name"] == "turnout-secrets"
    assert container["resources"]["requests"]
