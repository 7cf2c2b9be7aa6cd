"""deploy/kubernetes/ against the Kubernetes JSON schemas (kubernetes-validate ships them: no
cluster and no network needed), plus what the schemas cannot say: the DaemonSet is privileged
with /dev/fuse, shares /datastores with Bidirectional propagation, reads its config from the
ConfigMap (a config the daemon accepts) and credentials from the Secret or workload identity,
is ready when `dsmount ping` answers, and has its metrics port annotated for scraping; a
training pod consumes the mount with HostToContainer."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dsmount.node.config import parse_address, parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy/kubernetes"
K8S_VERSION = "1.30.0"  # the oldest release still supported upstream when this was written


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in documents() if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.mark.parametrize(("file", "doc"), [d for d in documents() if d[1]["kind"] !=
                                          "Kustomization"],
                         ids=lambda x: x if isinstance(x, str) else x.get("kind", "?"))
def test_every_manifest_is_valid_against_the_kubernetes_schema(file: str, doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_really_rejects_a_broken_manifest() -> None:
    broken = yaml.safe_load((DEPLOY / "daemonset.yaml").read_text())
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0][
        "mountPropagation"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    typo = yaml.safe_load((DEPLOY / "daemonset.yaml").read_text())
    typo["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def test_kustomization_lists_the_deployable_manifests() -> None:
    kustomization = by_kind("Kustomization")
    assert set(kustomization["resources"]) == {
        "namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "daemonset.yaml"}
    for name in kustomization["resources"]:
        assert (DEPLOY / name).is_file()


def test_the_daemonset_is_wired_as_the_readme_says() -> None:
    ds = by_kind("DaemonSet", "dsmount")
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    (c,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}

    assert c["securityContext"]["privileged"] is True
    assert volumes[mounts["/dev/fuse"]["name"]]["hostPath"] == {"path": "/dev/fuse",
                                                                "type": "CharDevice"}
    datastores = mounts["/datastores"]
    assert datastores["mountPropagation"] == "Bidirectional"
    assert volumes[datastores["name"]]["hostPath"]["path"] == "/datastores"

    # Config from the ConfigMap, and the daemon accepts it.
    config_mount = mounts["/etc/dsmount"]
    cm_name = volumes[config_mount["name"]]["configMap"]["name"]
    cm = by_kind("ConfigMap", cm_name)
    config = parse_config(tomllib.loads(cm["data"]["dsmount.toml"]))
    assert c["args"][c["args"].index("--config") + 1] == "/etc/dsmount/dsmount.toml"
    assert config.daemon.mountpoint == "/datastores"
    assert config.daemon.socket.startswith("/run/dsmount/")
    assert config.cache.disk_dir in mounts and config.daemon.state_dir in mounts

    # Credentials: from the Secret (by env var name in the config), or workload identity.
    env = {e["name"]: e for e in c["env"]}
    secret_ref = env["AZURE_STORAGE_CONNECTION_STRING"]["valueFrom"]["secretKeyRef"]
    secret = by_kind("Secret", secret_ref["name"])
    assert secret_ref["key"] in secret["stringData"]
    auths = [d["auth"] for d in config.datastores]
    assert {"kind": "connection_string", "env": "AZURE_STORAGE_CONNECTION_STRING"} in auths
    assert {"kind": "azure_ad"} in auths
    sa = by_kind("ServiceAccount", spec["serviceAccountName"])
    assert "azure.workload.identity/client-id" in sa["metadata"]["annotations"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert all("secret" not in a for a in auths)  # the ConfigMap holds no secret

    # Ready when the control socket answers.
    assert c["readinessProbe"]["exec"]["command"] == ["dsmount", "ping"]
    assert env["DSMOUNT_SOCKET"]["value"] == config.daemon.socket

    # Metrics: served on the port the annotations name.
    annotations = pod["metadata"]["annotations"]
    host, port = parse_address(config.metrics.address)
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in c["ports"]
    assert host == "0.0.0.0"  # reachable from the scraper, not only loopback

    # A memory limit, so the default cache budget follows it.
    assert c["resources"]["limits"]["memory"]


def test_a_training_pod_reads_it_with_host_to_container_propagation() -> None:
    pod = by_kind("Pod", "train-example")
    (c,) = pod["spec"]["containers"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/datastores")
    assert mount["mountPropagation"] == "HostToContainer" and mount["readOnly"] is True
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"]["path"] == "/datastores"
    assert "securityContext" not in c  # a training pod needs no privilege
    (init,) = pod["spec"]["initContainers"]
    assert init["command"][:2] == ["dsmount", "warm"]
