"""Offline checks of the deployment files (scripts/check-deploy runs this with the tools it installs).

1. The Grafana copies under deploy/k8s/base/grafana equal deploy/grafana.
2. `kustomize build` renders deploy/k8s and each overlay; every rendered object validates against
   the Kubernetes JSON schemas of KUBERNETES_VERSION (strict: unknown fields are errors); the Strimzi
   objects (no schema package offline) get a check of their required fields.
3. `docker-compose config` accepts deploy/compose/docker-compose.yml.
4. The manifests agree with the binary: every subcommand, flag and BANDVOTE_* variable they give a
   bandvote container exists in `bandvote <role> --help`; every probe, Service, ingress backend,
   Prometheus target and proxy route points at a port some bandvote service listens on.

Usage: check_deploy.py KUSTOMIZE BANDVOTE_BINARY DOCKER_COMPOSE
"""

import functools
import json
import pathlib
import re
import subprocess
import sys

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
ROOT = pathlib.Path(__file__).resolve().parent.parent
KUSTOMIZE, BANDVOTE, COMPOSE = sys.argv[1:4]
failures = []


def fail(message):
    failures.append(message)
    print(f"  FAIL {message}")


@functools.cache
def help_text(role=None):
    args = [BANDVOTE] + ([role] if role else []) + ["--help"]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    return result.stdout


def roles():
    text = help_text()
    section = text.split("Commands:", 1)[1].split("Options:", 1)[0]
    return {line.split()[0] for line in section.splitlines() if line.strip() and line.startswith("  ")} - {"help"}


def default_listen_port(role):
    match = re.search(r"--listen <LISTEN>.*?\[default: [\d.]+:(\d+)\]", help_text(role), re.S)
    return int(match.group(1)) if match else None


def check_bandvote_container(where, args, env_names):
    """Checks one bandvote container's role, flags and variables; returns the port it listens on."""
    if not args:
        fail(f"{where}: no role (subcommand) given")
        return None
    role = args[0]
    if role not in roles():
        fail(f"{where}: `{role}` is not a bandvote subcommand ({sorted(roles())})")
        return None
    text = help_text(role)
    for flag in (a.split("=", 1)[0] for a in args[1:] if a.startswith("--")):
        if not re.search(rf"(^|\s){re.escape(flag)}[\s=<,]", text, re.M):
            fail(f"{where}: `bandvote {role}` has no flag {flag}")
    for name in env_names:
        if name.startswith("BANDVOTE_") and f"[env: {name}=" not in text:
            fail(f"{where}: `bandvote {role}` reads no variable {name}")
    listen = None
    if "--listen" in args:
        listen = int(args[args.index("--listen") + 1].rsplit(":", 1)[1])
    return listen or default_listen_port(role)


def check_grafana_copies():
    print("== Grafana copies in deploy/k8s/base/grafana")
    pairs = {
        "datasources.yaml": "provisioning/datasources/bandvote.yaml",
        "dashboards.yaml": "provisioning/dashboards/bandvote.yaml",
        "contest-live.json": "dashboards/contest-live.json",
        "pipeline-health.json": "dashboards/pipeline-health.json",
    }
    for copy, original in pairs.items():
        a = (ROOT / "deploy/k8s/base/grafana" / copy).read_bytes()
        b = (ROOT / "deploy/grafana" / original).read_bytes()
        if a != b:
            fail(f"deploy/k8s/base/grafana/{copy} differs from deploy/grafana/{original} (scripts/check-deploy --sync-grafana)")


STRIMZI_REQUIRED = {
    "Kafka": [("spec", "kafka", "listeners")],
    "KafkaNodePool": [("spec", "replicas"), ("spec", "roles"), ("spec", "storage")],
    "KafkaTopic": [("spec", "partitions"), ("spec", "replicas")],
}


def check_strimzi(obj, where):
    kind = obj["kind"]
    for path in STRIMZI_REQUIRED.get(kind, []):
        node = obj
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node in (None, [], {}):
            fail(f"{where}: {kind} needs {'.'.join(path)}")
    if kind in ("KafkaNodePool", "KafkaTopic") and obj["metadata"].get("labels", {}).get("strimzi.io/cluster") != "bandvote":
        fail(f"{where}: {kind} must carry the label strimzi.io/cluster=bandvote")
    if kind == "Kafka" and obj["metadata"].get("annotations", {}).get("strimzi.io/kraft") != "enabled":
        fail(f"{where}: Kafka must run in KRaft mode (strimzi.io/kraft: enabled)")


def containers_of(obj):
    spec = obj.get("spec", {})
    template = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
    return template.get("containers", [])


def check_rendered(name, text):
    docs = [d for d in yaml.safe_load_all(text) if d]
    print(f"== {name}: {len(docs)} objects")
    listen_ports = {}  # (pod name, container name) -> port
    services = {}
    for obj in docs:
        where = f"{name} {obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].startswith("kafka.strimzi.io/"):
            check_strimzi(obj, where)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            fail(f"{where}: {error.message} at {'/'.join(map(str, error.path))}")
        except kubernetes_validate.SchemaNotFoundError as error:
            fail(f"{where}: no schema ({error})")
        if obj["kind"] == "Service":
            services[obj["metadata"]["name"]] = obj
        for container in containers_of(obj):
            cwhere = f"{where} container {container['name']}"
            if obj["kind"] in ("Deployment", "StatefulSet") and not container.get("resources", {}).get("limits"):
                fail(f"{cwhere}: no resource limits")
            security = container.get("securityContext", {})
            if security.get("allowPrivilegeEscalation") is not False or security.get("capabilities", {}).get("drop") != ["ALL"]:
                fail(f"{cwhere}: not a restricted security context")
            if not (container.get("readinessProbe") and container.get("livenessProbe")):
                fail(f"{cwhere}: needs readiness and liveness probes")
            if not container["image"].startswith("bandvote"):
                continue
            env = [e["name"] for e in container.get("env", [])]
            port = check_bandvote_container(cwhere, container.get("args", []), env)
            listen_ports[(obj["metadata"]["name"], container["name"])] = port
            declared = {p["containerPort"] for p in container.get("ports", [])}
            if port not in declared:
                fail(f"{cwhere}: listens on {port} but declares ports {sorted(declared)}")
            for probe in ("readinessProbe", "livenessProbe"):
                probe_port = container.get(probe, {}).get("httpGet", {}).get("port")
                if probe_port != port:
                    fail(f"{cwhere}: {probe} on port {probe_port}, the service listens on {port}")
        grace = obj.get("spec", {}).get("template", {}).get("spec", {}).get("terminationGracePeriodSeconds")
        if obj["kind"] == "Deployment" and (grace or 30) <= 10:
            fail(f"{where}: terminationGracePeriodSeconds must exceed the 10 s drain")
    # Services target ports some container of their pods listens on; the ingress targets Services.
    pod_ports = {}
    for (pod, _), port in listen_ports.items():
        pod_ports.setdefault(pod, set()).add(port)
    for svc_name, svc in services.items():
        pod = svc["spec"]["selector"].get("app.kubernetes.io/name")
        if pod in pod_ports:
            for port in svc["spec"]["ports"]:
                if port["targetPort"] not in pod_ports[pod]:
                    fail(f"{name} Service/{svc_name}: targetPort {port['targetPort']} is not a port of {pod}")
    for obj in docs:
        if obj["kind"] == "Ingress":
            for rule in obj["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    svc = services.get(backend["name"])
                    if not svc or backend["port"]["number"] not in [p["port"] for p in svc["spec"]["ports"]]:
                        fail(f"{name} Ingress {path['path']}: no Service {backend['name']}:{backend['port']['number']}")
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "prometheus":
            regex = re.search(r'regex: "([\d|]+)"', obj["data"]["prometheus.yml"]).group(1)
            scraped = {int(p) for p in regex.split("|")}
            for key, port in listen_ports.items():
                if port not in scraped:
                    fail(f"{name} Prometheus does not scrape {key} on {port}")
    return docs


def check_compose():
    print("== deploy/compose/docker-compose.yml")
    path = ROOT / "deploy/compose/docker-compose.yml"
    result = subprocess.run([COMPOSE, "-f", str(path), "config"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        fail(f"docker-compose config: {result.stderr.strip()}")
        return
    config = yaml.safe_load(result.stdout)
    ports = {}
    for name, service in config["services"].items():
        if not service.get("image", "").startswith("bandvote"):
            continue
        command = service.get("command", [])
        port = check_bandvote_container(f"compose {name}", command, list(service.get("environment", {})))
        ports[name] = port
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        if f":{port}/" not in test:
            fail(f"compose {name}: healthcheck `{test}` does not probe port {port}")
    for name, service in config["services"].items():
        for dependency in service.get("depends_on", {}):
            if dependency not in config["services"]:
                fail(f"compose {name}: depends on unknown service {dependency}")
    targets = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())["scrape_configs"][0]["static_configs"][0]["targets"]
    scraped = {t.split(":")[0]: int(t.split(":")[1]) for t in targets}
    for name, port in ports.items():
        if scraped.get(name) != port:
            fail(f"compose prometheus.yml: {name} should be scraped on {port} (has {scraped.get(name)})")
    nginx = (ROOT / "deploy/compose/nginx.conf").read_text()
    for host, port in re.findall(r"proxy_pass http://([\w-]+):(\d+)", nginx):
        if ports.get(host) != int(port):
            fail(f"compose nginx.conf: {host}:{port} is not where {host} listens ({ports.get(host)})")
    published = [p for s in config["services"].values() for p in s.get("ports", [])]
    if len(published) != 2:
        fail(f"compose: exactly two published ports (the app and Grafana), found {published}")
    # The dashboards provisioning path and version pins match deploy/grafana.
    versions = dict(l.split("=", 1) for l in (ROOT / "deploy/grafana/versions.env").read_text().split() if "=" in l)
    grafana = config["services"]["grafana"]
    if grafana["image"] != f"grafana/grafana:{versions['GRAFANA_VERSION']}":
        fail(f"compose grafana image {grafana['image']} is not the pinned {versions['GRAFANA_VERSION']}")
    if grafana["environment"]["GF_INSTALL_PLUGINS"] != f"redis-datasource {versions['GRAFANA_REDIS_DATASOURCE_VERSION']}":
        fail("compose grafana plugin version is not the pinned one")


def check_cloudrun():
    print("== deploy/cloudrun/service.yaml")
    service = yaml.safe_load((ROOT / "deploy/cloudrun/service.yaml").read_text())
    container = service["spec"]["template"]["spec"]["containers"][0]
    env = [e["name"] for e in container.get("env", [])]
    check_bandvote_container("cloudrun api", container["args"], env)
    if "--listen" in container["args"] or "BANDVOTE_LISTEN" in env:
        fail("cloudrun: the api must listen on $PORT (no --listen / BANDVOTE_LISTEN)")
    if "$PORT" not in help_text("api"):
        fail("cloudrun: `bandvote api` does not document listening on $PORT")
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    if annotations.get("run.googleapis.com/vpc-access-egress") != "private-ranges-only":
        fail("cloudrun: Redis and MongoDB must be reached over the VPC connector only")


def main():
    check_grafana_copies()
    for target in ["deploy/k8s", "deploy/k8s/overlays/gke-small", "deploy/k8s/overlays/production"]:
        result = subprocess.run([KUSTOMIZE, "build", str(ROOT / target)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            fail(f"kustomize build {target}: {result.stderr.strip()}")
            continue
        docs = check_rendered(target, result.stdout)
        if target.endswith("production"):
            kafka = next(d for d in docs if d["kind"] == "Kafka")["spec"]["kafka"]["config"]
            pool = next(d for d in docs if d["kind"] == "KafkaNodePool")["spec"]["replicas"]
            topic = next(d for d in docs if d["kind"] == "KafkaTopic" and d["metadata"]["name"] == "votes")["spec"]
            if (pool, kafka.get("default.replication.factor"), kafka.get("min.insync.replicas"), topic["replicas"]) != (3, 3, 2, 3):
                fail("production: 3 brokers, replication factor 3 and min.insync.replicas=2 expected")
            if topic["partitions"] != 6:
                fail("production: the votes topic has 6 partitions")
    check_compose()
    check_cloudrun()
    if failures:
        print(f"\n{len(failures)} problem(s) in the deployment files")
        sys.exit(1)
    print("\ndeployment files: all checks passed")


main()
