"""The Kubernetes manifests (deploy/kubernetes), checked offline.

Every document is validated against the schemas of one Kubernetes release in strict mode
(`kubernetes-validate`: unknown fields and wrong types are errors); every `conscience …` command
and flag they run, every CONSCIENCE_* variable and ConfigMap key they set, every Secret and
ConfigMap key they read, the probes, the shared adapters volume and the kustomization's list of
files are checked against the CLI, the settings and each other.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from service.settings import Settings
from service.settings import variable as setting_variable
from service.shutdown import SETTLE_S
from tests.cli_commands import problems
from trainer.nightly.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
# A release the package ships schemas for; the manifests use nothing newer (CronJob timeZone
# is GA since 1.27).
KUBERNETES_VERSION = "1.32"
# The slim image's ENTRYPOINT is `conscience serve`: a container of it without a `command`
# runs serve with its `args`.
PROXY_IMAGE = "conscience"
ADAPTERS_CLAIM = "conscience-adapters"
# Kubernetes expands $(NAME) in command and args from the container's environment.
_REFERENCE = re.compile(r"\$\((\w+)\)")

SERVE_VARIABLES = Settings.variables()
TRAIN_VARIABLES = {  # a knob's envvar is a name, or names (the first set wins)
    name for field in dataclasses.fields(TrainConfig) if field.metadata.get("envvar")
    for name in ([field.metadata["envvar"]] if isinstance(field.metadata["envvar"], str) else field.metadata["envvar"])
}


def manifest_files() -> list[Path]:
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path.name != "kustomization.yaml")


def applied_files() -> list[Path]:
    """The files `kubectl apply -k` applies: example Secrets are for reading, never applying."""
    return [path for path in manifest_files() if not path.name.endswith(".example.yaml")]


def documents(paths: list[Path]) -> list[dict]:
    return [
        document
        for path in paths
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document is not None
    ]


def by_kind(kind: str, paths: list[Path] | None = None) -> list[dict]:
    return [doc for doc in documents(paths or applied_files()) if doc["kind"] == kind]


def one(kind: str, name: str) -> dict:
    [found] = [doc for doc in by_kind(kind) if doc["metadata"]["name"] == name]
    return found


def pod_specs() -> Iterator[tuple[str, dict]]:
    for doc in documents(applied_files()):
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            yield doc["metadata"]["name"], spec["template"]["spec"]


def containers() -> Iterator[tuple[str, dict]]:
    for name, pod in pod_specs():
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{name}/{container['name']}", container


def conscience_words(container: dict) -> list[str] | None:
    """The words after `conscience` that the container runs, or None when it runs something else."""
    command, args = container.get("command"), container.get("args", [])
    if command is None and container["image"] == PROXY_IMAGE:
        return ["serve", *args]
    if command and command[0] == "conscience":
        return [*command[1:], *args]
    return None


def validate(document: dict) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def schema_errors(docs: list[dict]) -> list[str]:
    """One line per invalid document: the field and the rule (the error's own text dumps the
    whole schema)."""
    errors = []
    for document in docs:
        try:
            validate(document)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.absolute_path)
            name = f"{document['kind']}/{document['metadata']['name']}"
            errors.append(f"{name}: {where}: {error.message}")
    return errors


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    docs = documents([path])
    assert docs, f"{path.name} holds no document"
    assert schema_errors(docs) == []


def test_the_validator_rejects_unknown_fields_and_kinds() -> None:
    """Strict validation is what catches a misspelt field; make sure it is in force."""
    deployment = one("Deployment", "conscience-proxy")
    validate(deployment)
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        validate(misspelt)
    mistyped = copy.deepcopy(deployment)
    mistyped["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(mistyped)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({**deployment, "kind": "Deploymnet"})


def test_the_kustomization_lists_every_manifest_but_the_examples() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a file listed twice"
    assert sorted(listed) == sorted(path.name for path in applied_files())
    images = {container["image"] for _, container in containers()}
    assert {image["name"] for image in kustomization["images"]} == images


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (its built-in kustomize)")
def test_the_kustomization_renders_to_valid_manifests() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True
    ).stdout
    docs = list(yaml.safe_load_all(rendered))
    assert len(docs) == len(documents(applied_files()))
    assert schema_errors(docs) == []
    for document in docs:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "conscience"


def test_every_conscience_command_and_flag_exists() -> None:
    commands = {name: words for name, c in containers() if (words := conscience_words(c)) is not None}
    assert {words[0] for words in commands.values()} == {"serve", "db", "train"}
    assert [problem for words in commands.values() for problem in problems(words)] == []


def test_every_reference_in_command_and_args_is_in_the_container_environment() -> None:
    for name, container in containers():
        defined = {variable["name"] for variable in container.get("env", [])}
        words = container.get("command", []) + container.get("args", [])
        used = {ref for word in words for ref in _REFERENCE.findall(word)}
        assert used <= defined, f"{name}: $({', '.join(sorted(used - defined))}) stays literal"


def test_every_conscience_variable_and_configmap_key_is_a_setting() -> None:
    for name, container in containers():
        words = conscience_words(container)
        known = TRAIN_VARIABLES if words and words[0] == "train" else SERVE_VARIABLES
        used = {variable["name"] for variable in container.get("env", [])}
        assert {v for v in used if v.startswith("CONSCIENCE_")} - known == set(), name
    for config_map in by_kind("ConfigMap"):
        assert set(config_map["data"]) - SERVE_VARIABLES == set(), config_map["metadata"]["name"]


def test_every_secret_and_configmap_key_read_is_defined() -> None:
    secrets = {
        (doc["metadata"]["name"], key)
        for doc in by_kind("Secret", manifest_files())
        for key in doc.get("stringData", {}) | doc.get("data", {})
    }
    config = {(doc["metadata"]["name"], key) for doc in by_kind("ConfigMap") for key in doc["data"]}
    for name, container in containers():
        for variable in container.get("env", []):
            source = variable.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                assert (ref["name"], ref["key"]) in secrets, f"{name}: {variable['name']}"
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                assert (ref["name"], ref["key"]) in config, f"{name}: {variable['name']}"
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in {name for name, _ in config}, name
    for _, pod in pod_specs():
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"]["items"]:
                    assert (volume["secret"]["secretName"], item["key"]) in secrets


@pytest.mark.parametrize(
    ("secret", "setting"), [("conscience-admin", "admin_key"), ("conscience-metrics", "metrics_key")]
)
def test_the_example_keys_are_not_working_keys(secret: str, setting: str) -> None:
    [example] = [doc for doc in by_kind("Secret", manifest_files()) if doc["metadata"]["name"] == secret]
    [value] = example["stringData"].values()
    with pytest.raises(ValidationError, match="at least"):
        Settings(**{setting: value})


def _proxy() -> tuple[dict, dict]:
    pod = one("Deployment", "conscience-proxy")["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "proxy"]
    return pod, container


def _proxy_setting(name: str) -> float:
    """A proxy setting as its pod gets it: a `--flag=` in args, else the ConfigMap, else the default."""
    _, container = _proxy()
    flag = f"--{name.replace('_', '-')}="
    for arg in container["args"]:
        if arg.startswith(flag):
            return float(arg.removeprefix(flag))
    [config] = by_kind("ConfigMap")
    path = Settings.path_of(name)
    value = config["data"].get(setting_variable(path))
    return float(value) if value is not None else float(Settings.setting_fields()[path].default)


def test_the_pod_grace_period_covers_the_proxys_whole_shutdown() -> None:
    """Kubernetes kills after terminationGracePeriodSeconds, counted from the preStop hook: the
    pause, the wait for requests in flight, their records settling and the writer's drain
    must all fit, with a margin for closing the backend and the database."""
    pod, container = _proxy()
    [pause] = [int(word) for word in container["lifecycle"]["preStop"]["exec"]["command"][1:]]
    needed = pause + _proxy_setting("shutdown_grace_s") + SETTLE_S + _proxy_setting("writer_shutdown_timeout_s")
    assert pod["terminationGracePeriodSeconds"] >= needed + 5


def test_the_proxy_probes_readiness_and_liveness_on_its_port() -> None:
    _, container = _proxy()
    [port] = container["ports"]
    assert f"--port={port['containerPort']}" in container["args"]
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] in (port["name"], port["containerPort"])
    service = one("Service", "conscience-proxy")["spec"]
    assert [p["targetPort"] for p in service["ports"]] in ([port["name"]], [port["containerPort"]])


@pytest.mark.parametrize(
    ("variable", "secret"),
    [("CONSCIENCE_SECURITY__ADMIN_KEY", "conscience-admin"),
     ("CONSCIENCE_SECURITY__METRICS_KEY", "conscience-metrics")],
)
def test_the_proxy_reads_its_keys_from_mounted_secrets(variable: str, secret: str) -> None:
    pod, container = _proxy()
    env = {variable["name"]: variable for variable in container["env"]}
    assert variable not in env, "the key belongs in a file, not the pod spec"
    key_file = Path(env[f"{variable}_FILE"]["value"])
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(key_file.parent)]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret
    assert key_file.name in {item["path"] for item in volume["secret"]["items"]}


def test_the_proxy_runs_as_the_image_user_on_a_read_only_root_with_a_writable_spool() -> None:
    pod, container = _proxy()
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    user, group = re.findall(r"^USER (\d+):(\d+)$", dockerfile, flags=re.MULTILINE)[-1]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (user, group)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    [config] = by_kind("ConfigMap")
    spool = Path(config["data"]["CONSCIENCE_STORE__SPOOL_PATH"])
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert str(spool.parent) in writable
    assert config["data"]["CONSCIENCE_UPSTREAM__URL"].startswith("http://vllm:8000/")


def _selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_the_services_autoscaler_and_disruption_budget_find_their_pods() -> None:
    pods = {doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["labels"] for doc in by_kind("Deployment")}
    for service in by_kind("Service"):
        assert any(_selects(service["spec"]["selector"], labels) for labels in pods.values())
    [budget] = by_kind("PodDisruptionBudget")
    assert _selects(budget["spec"]["selector"]["matchLabels"], pods["conscience-proxy"])
    [autoscaler] = by_kind("HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "conscience-proxy")
    assert "replicas" not in one("Deployment", "conscience-proxy")["spec"], "the autoscaler owns it"
    assert autoscaler["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def _adapters_mount(pod: dict, container: dict) -> dict:
    [volume] = [v for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == ADAPTERS_CLAIM]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    return mount


def test_vllm_loads_adapters_at_runtime_from_where_the_trainer_writes_them() -> None:
    vllm_pod = one("Deployment", "vllm")["spec"]["template"]["spec"]
    [vllm] = vllm_pod["containers"]
    assert {"--enable-lora"} <= set(vllm["args"])
    flags = dict(arg.split("=", 1) for arg in vllm["args"] if "=" in arg)
    assert int(flags["--max-loras"]) > 3, "more than the trainer's --keep-loaded"
    assert int(flags["--max-lora-rank"]) >= 16, "at least the trainer's --lora-rank"
    env = {variable["name"]: variable for variable in vllm["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]["value"] == "True"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] >= 1
    read_only = _adapters_mount(vllm_pod, vllm)
    assert read_only.get("readOnly") is True

    [cron] = by_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    train_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [train] = train_pod["containers"]
    read_write = _adapters_mount(train_pod, train)
    assert not read_write.get("readOnly")
    words = conscience_words(train)
    assert words is not None and words[0] == "train"
    assert f"--adapters-dir={read_write['mountPath']}" in words
    assert read_write["mountPath"] == read_only["mountPath"], "vLLM must see the trainer's paths"
    assert {"--publish=vllm", "--vllm-url=http://vllm:8000"} <= set(words)
    assert train["resources"]["limits"]["nvidia.com/gpu"] >= 1
    service = one("Service", "vllm")["spec"]
    assert [p["port"] for p in service["ports"]] == [8000]
    [claim] = [doc for doc in by_kind("PersistentVolumeClaim") if doc["metadata"]["name"] == ADAPTERS_CLAIM]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "vLLM and the trainer mount it at once"
