"""The Kubernetes manifests of deploy/ are valid (checked offline against Kubernetes' own schemas by
kubernetes-validate, strict: no unknown field) and agree with the image: probes on the service's
health routes, its non-root user, the classes store on a shared volume."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ["kubernetes.yaml", "kubernetes-gpu.yaml"]


def resources(name: str) -> list[dict]:
    return [r for r in yaml.safe_load_all((ROOT / "deploy" / name).read_text()) if r]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_are_valid_kubernetes(name):
    version = kubernetes_validate.latest_version()
    for resource in resources(name):
        kubernetes_validate.validate(resource, version, strict=True)  # raises ValidationError


def test_the_validator_does_refuse_a_bad_manifest():
    deployment = next(r for r in resources("kubernetes.yaml") if r["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name", MANIFESTS)
def test_deployments_match_the_image(name):
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for deployment in (r for r in resources(name) if r["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert f"--uid {pod['securityContext']['runAsUser']}" in dockerfile
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["SOUNDARC_CLASSES"].startswith("/data/")
        assert any(m["mountPath"] == "/data" for m in container["volumeMounts"])


def test_each_manifest_stands_alone_and_its_pods_are_its_own():
    """Either file is applied alone (the GPU one asked for the CPU one first, which started CPU pods too); the
    Deployments select only their own pods; the Service reaches them; an image built here is not pulled."""
    selectors = []
    for name in MANIFESTS:
        kinds = {r["kind"]: r for r in resources(name)}
        deployment, service = kinds["Deployment"], kinds["Service"]
        claim = deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert kinds["PersistentVolumeClaim"]["metadata"]["name"] == claim
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"] == labels
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
        selectors.append(labels)
    assert selectors[0] != selectors[1]
