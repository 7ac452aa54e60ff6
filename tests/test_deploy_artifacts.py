"""The deployment artifacts under deploy/: the image is built and run for real, the Kubernetes
manifests validated offline against the API's schemas (kubernetes-validate, strict), the Swarm
stack through the docker CLI's stack loader, and every setting they name is one cargohold has."""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cargohold.auth.sealing import load_secret
from cargohold.config import ENV_PREFIX, Config, load_config
from tests.support.clients import Dockerd, hello_context, run
from tests.support.deploy import DEPLOY, Nginx, build_image, import_base
from tests.support.servers import free_port, require_tool
from tests.support.waiting import wait_until

KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes release still maintained upstream when this was written, and the newest
# that kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
SETTINGS = {ENV_PREFIX + field.name.upper() for field in dataclasses.fields(Config)}
UID = 10001
LABELS = {"app.kubernetes.io/name": "cargohold", "app.kubernetes.io/component": "registry"}


# --- Kubernetes ------------------------------------------------------------------------------------------------------


def manifests() -> list[Path]:
    files = sorted(path for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")
    assert files, f"no manifests under {KUBERNETES}"
    return files


def documents() -> dict[str, dict[str, Any]]:
    """Every manifest's objects by kind (one object of each kind here)."""
    found: dict[str, dict[str, Any]] = {}
    for path in manifests():
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in found, f"two {document['kind']} objects"
            found[document["kind"]] = document
    return found


def validator() -> str:
    """kubernetes-validate from this environment (the `test` extra), else from PATH."""
    beside = Path(sys.executable).parent / "kubernetes-validate"
    return str(beside) if beside.exists() else require_tool("kubernetes-validate")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly_offline(version: str) -> None:
    files = manifests()
    result = run([validator(), "--strict", "--kubernetes-version", version, *files])
    passed = re.findall(r"passed for resource (\S+)", result.stdout + result.stderr)
    assert len(passed) == len(files), f"expected {len(files)} objects to pass, got: {result.stdout}{result.stderr}"


def test_the_validator_refuses_what_the_api_would(tmp_path: Path) -> None:
    """The check above can fail: a misspelt field and a string replica count are refused."""
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    deployment["spec"]["replica"] = 3
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(yaml.safe_dump(deployment))
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    deployment["spec"]["replicas"] = "three"
    wrong_type = tmp_path / "wrong-type.yaml"
    wrong_type.write_text(yaml.safe_dump(deployment))
    for bad in (misspelt, wrong_type):
        result = run([validator(), "--strict", bad], check=False)
        assert result.returncode != 0, f"{bad.name} passed validation:\n{result.stdout}{result.stderr}"


def test_kustomization_lists_every_manifest_and_none_names_a_namespace() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in manifests())
    for kind, document in documents().items():
        assert "namespace" not in document["metadata"], f"the {kind} names a namespace"


def _pod(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objects["Deployment"]["spec"]["template"]["spec"]


def test_deployment_runs_three_hardened_replicas_with_probes_and_a_schema_upgrade_first() -> None:
    objects = documents()
    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = _pod(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID, "the uid the image's Dockerfile creates"
    (init,) = pod["initContainers"]
    assert init["args"] == ["db", "upgrade"]
    (registry,) = pod["containers"]
    assert registry["args"] == ["serve"]
    assert init["image"] == registry["image"], "the schema must be upgraded by the release that serves it"
    for container in (init, registry):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        # the root filesystem is read-only: every place cargohold writes is a volume
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert "emptyDir" in volumes[mounts["/var/lib/cargohold"]]
    for probe in ("readinessProbe", "livenessProbe"):
        assert registry[probe]["exec"]["command"] == ["cargohold-healthcheck"], probe
    assert registry["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]


def test_service_and_disruption_budget_select_the_deployments_pods() -> None:
    objects = documents()
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"] == LABELS
    assert labels == LABELS
    assert objects["Service"]["spec"]["selector"] == LABELS
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == LABELS
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] < objects["Deployment"]["spec"]["replicas"]


def test_every_setting_the_manifests_give_is_a_cargohold_setting() -> None:
    """A renamed or misspelt setting in config.py or the manifests fails here, not in a cluster."""
    objects = documents()
    config_keys = set(objects["ConfigMap"]["data"])
    assert config_keys <= SETTINGS, f"not cargohold settings: {sorted(config_keys - SETTINGS)}"
    # the ConfigMap's values are settings cargohold accepts, read as the environment
    load_config(environ=dict(objects["ConfigMap"]["data"]))
    pod = _pod(objects)
    secret = objects["Secret"]
    for container in (*pod["initContainers"], pod["containers"][0]):
        assert [source["configMapRef"]["name"] for source in container["envFrom"]] == ["cargohold"]
        for variable in container.get("env", []):
            name = variable["name"]
            assert name in SETTINGS or name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), name
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference["name"] == secret["metadata"]["name"]
            assert reference["key"] in secret["stringData"], f"{name} reads a key the Secret lacks"
    # the secret file is mounted where the ConfigMap says it is
    mounts = {mount["name"]: mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"]}
    (secret_volume,) = [volume for volume in pod["volumes"] if "secret" in volume]
    (item,) = secret_volume["secret"]["items"]
    assert f"{mounts[secret_volume['name']]}/{item['path']}" == objects["ConfigMap"]["data"]["CARGOHOLD_SECRET_FILE"]
    assert item["key"] in secret["stringData"]


def test_the_secret_template_holds_only_placeholders(tmp_path: Path) -> None:
    secret = documents()["Secret"]
    assert "data" not in secret, "base64 values would hide whether they are placeholders"
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, f"Secret key {key} holds a value that is not a marked placeholder"
    # cargohold refuses to start on the placeholder secret file rather than sealing keys under it
    placeholder = tmp_path / "secret.key"
    placeholder.write_text(secret["stringData"]["secret.key"])
    with pytest.raises(Exception, match="32 random bytes"):
        load_secret(placeholder, create=False)


# --- The Swarm stack -------------------------------------------------------------------------------------------------


def stack_config(compose: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The docker CLI's own stack loader (the one `docker stack deploy` uses: schema-checked,
    interpolated); no engine needed. Debian's docker 20.10 CLI lacks the command, the CLI 28 of
    this machine image has it."""
    docker = require_tool("docker")
    probe = run([docker, "stack", "config", "--help"], check=False)
    if probe.returncode != 0 or "Outputs the final config file" not in probe.stdout:
        pytest.fail(f"{docker} has no `docker stack config` (docker CLI 23 or newer needed)", pytrace=False)
    return run([docker, "stack", "config", "-c", compose], env={**os.environ, **(env or {})}, check=False)


def test_the_stack_file_loads_as_swarm_reads_it() -> None:
    result = stack_config(DEPLOY / "compose.yaml", {"CARGOHOLD_REPLICAS": "5"})
    assert result.returncode == 0, f"docker stack config refused deploy/compose.yaml:\n{result.stderr}"
    stack = yaml.safe_load(result.stdout)
    services = stack["services"]
    assert set(services) == {"postgres", "minio", "bucket", "db-upgrade", "cargohold", "balancer"}
    cargohold = services["cargohold"]
    assert cargohold["deploy"]["replicas"] == 5, "the replica count is CARGOHOLD_REPLICAS"
    assert services["db-upgrade"]["command"][:2] == ["db", "upgrade"]
    assert services["db-upgrade"]["image"] == cargohold["image"]
    assert services["db-upgrade"]["deploy"]["restart_policy"]["condition"] == "on-failure", "a one-shot job"
    assert cargohold["command"][0] == "serve"
    # the balancer is the only way in
    assert [service for service, spec in services.items() if spec.get("ports")] == ["balancer"]
    assert services["balancer"]["configs"][0]["target"] == "/etc/nginx/nginx.conf"
    # secrets, never values in the environment
    for name in ("cargohold", "db-upgrade"):
        environment = services[name]["environment"]
        assert set(environment) <= SETTINGS | {"AWS_SHARED_CREDENTIALS_FILE"}, name
        assert not {"CARGOHOLD_DATABASE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(environment)
        mounted = {secret["source"]: secret for secret in services[name]["secrets"]}
        assert set(mounted) == {"cargohold_config", "cargohold_secret_key", "s3_credentials"}
        assert all(secret["uid"] == str(UID) and secret["mode"] == 0o400 for secret in mounted.values())
        load_config(environ=environment)
        assert environment["CARGOHOLD_SECRET_FILE"] == "/run/secrets/cargohold_secret_key"
        assert environment["AWS_SHARED_CREDENTIALS_FILE"] == "/run/secrets/s3_credentials"
        assert services[name]["command"][-2:] == ["--config", "/run/secrets/cargohold_config"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert set(stack["secrets"]) == {
        "cargohold_config", "cargohold_secret_key", "s3_credentials",
        "postgres_password", "minio_root_user", "minio_root_password",
    }  # fmt: skip


def test_the_stack_loader_refuses_what_swarm_would(tmp_path: Path) -> None:
    """The check above can fail: an unknown key and a replica count that is no number."""
    shutil.copy(DEPLOY / "nginx.conf", tmp_path / "nginx.conf")
    text = (DEPLOY / "compose.yaml").read_text()
    (tmp_path / "unknown.yaml").write_text(text.replace("    stop_grace_period: 60s\n", "    stop_grace_perod: 60s\n"))
    assert stack_config(tmp_path / "unknown.yaml").returncode != 0
    assert stack_config(DEPLOY / "compose.yaml", {"CARGOHOLD_REPLICAS": "three"}).returncode != 0


def test_make_secrets_writes_what_the_stack_and_cargohold_read(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    run([DEPLOY / "make-secrets.sh", secrets])
    assert len(load_secret(secrets / "secret.key", create=False)) == 32
    config = load_config(secrets / "cargohold.yaml", environ={})
    password = (secrets / "postgres-password").read_text()
    assert config.database == f"postgresql://cargohold:{password}@postgres:5432/cargohold"
    credentials = configparser.ConfigParser()
    credentials.read(secrets / "s3-credentials")
    assert credentials["default"]["aws_access_key_id"] == (secrets / "minio-root-user").read_text()
    assert credentials["default"]["aws_secret_access_key"] == (secrets / "minio-root-password").read_text()
    assert all(path.stat().st_mode & 0o077 == 0 for path in secrets.iterdir()), "secret files readable by others"
    # and it never overwrites the secrets of a running stack
    again = run([DEPLOY / "make-secrets.sh", secrets], check=False)
    assert again.returncode != 0 and "exists" in again.stderr


def test_the_stack_file_names_only_files_that_exist() -> None:
    stack = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert (DEPLOY / stack["configs"]["nginx_conf"]["file"]).is_file()
    made_by_script = (DEPLOY / "make-secrets.sh").read_text()
    for name, secret in stack["secrets"].items():
        assert Path(secret["file"]).parent == Path("secrets"), name
        assert Path(secret["file"]).name in made_by_script, f"make-secrets.sh does not write {secret['file']}"


def test_nginx_settings_a_registry_needs() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    for setting in (
        "client_max_body_size 0;",
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "chunked_transfer_encoding on;",
        "proxy_http_version 1.1;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_read_timeout 900s;",
        "proxy_send_timeout 900s;",
    ):
        assert setting in text, setting


# --- The image, built and run ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(dockerd: Dockerd) -> Iterator[str]:
    started = time.monotonic()
    base = import_base(dockerd)
    imported = time.monotonic()
    tag = f"cargohold-test:{uuid.uuid4().hex[:8]}"
    build_image(dockerd, base, tag)
    built = time.monotonic()
    print(f"\nbase image ready in {imported - started:.1f} s, cargohold image built in {built - imported:.1f} s")
    yield tag
    dockerd.run("rmi", "-f", tag, check=False)


def container_state(dockerd: Dockerd, name: str) -> dict[str, Any]:
    return json.loads(dockerd.run("inspect", "--format", "{{json .State}}", name).stdout)


def test_image_metadata(dockerd: Dockerd, image: str) -> None:
    config = json.loads(dockerd.run("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["cargohold"]
    assert config["Cmd"] == ["serve"]
    assert "5000/tcp" in config["ExposedPorts"]
    assert "/var/lib/cargohold" in config["Volumes"]
    assert config["Healthcheck"]["Test"] == ["CMD", "cargohold-healthcheck"]
    assert "CARGOHOLD_LISTEN=0.0.0.0:5000" in config["Env"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "cargohold"
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"]), labels
    version = dockerd.run("run", "--rm", "--network", "none", image, "--version").stdout
    assert "cargohold" in version


def test_image_serves_as_non_root_turns_healthy_and_takes_a_push(dockerd: Dockerd, image: str, tmp_path: Path) -> None:
    """The image as a user runs it: the data directory a named volume, access control on (the
    default), the port on loopback. The engine here has no bridge network (the tests' dockerd runs
    with --bridge=none), so the container shares the host's network and listens on 127.0.0.1 only,
    which a `-p 127.0.0.1:PORT:5000` gives elsewhere."""
    port, proxy_port = free_port(), free_port()
    name = f"cargohold-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-data"
    proxy: Nginx | None = None
    try:
        dockerd.run(
            "run", "-d", "--name", name, "--network", "host",
            "-e", f"CARGOHOLD_LISTEN=127.0.0.1:{port}",
            # the image's probe, checked every second here instead of every 15 s
            "--health-interval", "1s",
            "-v", f"{volume}:/var/lib/cargohold",
            image,
        )  # fmt: skip

        def logs() -> str:
            result = dockerd.run("logs", name, check=False)
            return result.stdout + result.stderr

        def healthy() -> bool:
            state = container_state(dockerd, name)
            assert state["Running"], f"the container exited ({state['ExitCode']}):\n{logs()}"
            health = state["Health"]
            probes = "\n".join(f"exit {probe['ExitCode']}: {probe['Output']}" for probe in health["Log"])
            assert health["Status"] != "unhealthy", f"the HEALTHCHECK failed:\n{probes}\n{logs()}"
            return health["Status"] == "healthy"

        wait_until(healthy, "the container's HEALTHCHECK reporting healthy", timeout=60)
        url = f"http://127.0.0.1:{port}"
        challenge = httpx.get(f"{url}/v2/", timeout=5)
        assert challenge.status_code == 401 and "bearer" in challenge.headers["www-authenticate"].lower()

        # not root: the server process (seen from the host) and the files it made
        pid = container_state(dockerd, name)["Pid"]
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == [str(UID)] * 4, uids
        owners = dockerd.run("exec", name, "stat", "-c", "%u:%g %a %n", "/var/lib/cargohold/metadata.sqlite3",
                             "/var/lib/cargohold/initial-admin-password").stdout  # fmt: skip
        assert all(line.startswith(f"{UID}:{UID} ") for line in owners.splitlines()), owners
        assert "600 /var/lib/cargohold/initial-admin-password" in owners
        password = dockerd.run("exec", name, "cat", "/var/lib/cargohold/initial-admin-password").stdout.strip()

        # a real client pushes through nginx with deploy/nginx.conf's proxy settings, pulls direct
        proxy = Nginx(tmp_path / "nginx", proxy_port, f"127.0.0.1:{port}").start()
        wait_until(lambda: _answers(proxy.url + "/v2/"), "nginx answering", timeout=10)
        via_proxy, direct = f"127.0.0.1:{proxy_port}/deploy/hello:1", f"127.0.0.1:{port}/deploy/hello:1"
        hello = f"hello from {name}\n".encode()
        dockerd.run("build", "--network", "none", "-t", via_proxy, hello_context(tmp_path / "ctx", hello, "Dockerfile"))
        for host in (f"127.0.0.1:{proxy_port}", f"127.0.0.1:{port}"):
            dockerd.run("login", "-u", "admin", "--password-stdin", host, stdin=password + "\n")
        dockerd.run("push", via_proxy)
        dockerd.run("rmi", via_proxy)

        # the data outlives the container: a new one on the same volume serves the pushed image,
        # this time as deploy/kubernetes runs it (read-only root, scratch /tmp, no capabilities)
        dockerd.run("stop", "--time", "20", name)
        stopped = container_state(dockerd, name)
        dockerd.run("rm", name)
        dockerd.run(
            "run", "-d", "--name", name, "--network", "host", "-e", f"CARGOHOLD_LISTEN=127.0.0.1:{port}",
            "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--health-interval", "1s", "-v", f"{volume}:/var/lib/cargohold", image,
        )  # fmt: skip
        wait_until(healthy, "the second container reporting healthy", timeout=60)
        dockerd.run("pull", direct)
        shown = dockerd.run("run", "--rm", "--network", "none", direct).stdout
        assert shown.encode() == hello
        # SIGTERM reached the server, which stopped cleanly, rather than the engine's SIGKILL after 20 s
        assert stopped["ExitCode"] == 0, f"the server's exit code on docker stop: {stopped}\n{logs()}"
    finally:
        if proxy is not None:
            proxy.stop()
        dockerd.run("rm", "-f", name, check=False)
        dockerd.run("volume", "rm", "-f", volume, check=False)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code in (200, 401)
    except httpx.HTTPError:
        return False
