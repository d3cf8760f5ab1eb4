"""Offline checks of the deployment files (scripts/check-deploy runs this with the tools it installs).

1. The Grafana copies under deploy/k8s/base/grafana equal deploy/grafana.
2. `kustomize build` renders deploy/k8s and each overlay; every rendered object validates against
   the schema of what will read it: the Kubernetes JSON schemas of KUBERNETES_VERSION (strict:
   unknown fields are errors); the CRDs of Gateway API, cert-manager and KEDA at the versions of
   deploy/versions.env (deploycheck/crds.py); the Strimzi objects loaded into Strimzi's own Java API
   model at STRIMZI_VERSION, unknown properties refused (deploycheck/strimzi/StrimziCheck.java).
3. Pod Security "restricted" (deploycheck/podsecurity.py) for every pod the stack creates: ours,
   the ones the Strimzi operator makes from the Kafka resource (through its own security
   provider), and cert-manager's HTTP-01 solver.
4. NetworkPolicies (deploycheck/netpol.py, with the policies Strimzi generates for its listeners):
   every arrow of the data flow is open, and the internet, other namespaces and other pods reach
   nothing else. The Gateway's routes send each public path to its Service and never /metrics or
   /readyz.
5. Autoscaling, disruption budgets, images, Redis/MongoDB settings, the Sentinels' users, Kafka
   placement and versions (against Strimzi's published parent POM and Kafka's own MetadataVersion),
   compose volumes, the image build (Dockerfile, .dockerignore), Cloud Run's path to the stores,
   and the cluster guide's pinned versions.
6. Dashboards as Grafana draws them (deploycheck/grafana_panels.py): the fields each panel keeps
   through its transformations, and refresh intervals the provisioned Grafana allows.
7. Compose v2's own loader (compose-go, deploycheck/compose) loads deploy/compose/docker-compose.yml,
   alone and with redis-sentinel.yml, as `docker compose config` would: `.env` values from
   .env.example, interpolation, the Compose Specification's schema, consistency, no warning (an
   obsolete `version:` for one); and refuses it without the passwords. On the model it prints:
   ports, volumes, images, healthchecks, proxy and Prometheus targets; with redis-sentinel.yml its
   nodes run the production overlay's scripts under the names the scripts ask, each with a Sentinel
   on its network, and every app's Redis is the Sentinels'.
8. A real control plane (deploycheck/cluster.py, deploycheck/control-plane): each render applied
   server-side to kube-apiserver with the CRDs as their projects ship them, into a namespace that
   enforces "restricted" Pod Security, nothing left in `default`; every Deployment, StatefulSet
   and the Strimzi operator's pods (made by hand with its labels) Ready on kwok's fake nodes shaped
   like the guide's node pool: admission, the scheduler's resource fit and anti-affinity are real.
9. The manifests agree with the binary: every subcommand, flag and BANDVOTE_* variable they give a
   bandvote container exists in `bandvote <role> --help`; every probe, Service, route backend,
   Prometheus target and proxy route points at a port some bandvote service listens on.

Usage: check_deploy.py KUSTOMIZE BANDVOTE_BINARY COMPOSE_CONFIG (deploycheck/compose, built)
Environment (set by scripts/check-deploy): BANDVOTE_JAVA (Java 21 or newer),
BANDVOTE_STRIMZI_CLASSPATH (io.strimzi:api and its dependencies), BANDVOTE_STRIMZI_POM (Strimzi's
parent POM), BANDVOTE_KAFKA_CLASSPATH (org.apache.kafka:kafka-server-common at KAFKA_VERSION),
BANDVOTE_CRD_DIRS (directories of CRD YAML files, separated by ':'), BANDVOTE_STRIMZI_CRDS
(Strimzi's CRDs, generated),
BANDVOTE_CONTROL_PLANE (the directory of the control plane's binaries).
"""

import fnmatch
import functools
import ipaddress
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from deploycheck import cluster, crds, grafana_panels, netpol, podsecurity  # noqa: E402

KUBERNETES_VERSION = "1.33.0"
ROOT = pathlib.Path(__file__).resolve().parent.parent
KUSTOMIZE, BANDVOTE, COMPOSE = sys.argv[1:4]
failures = []


def read_env_file(path):
    """KEY=value lines (shell syntax without expansions), comments skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value.strip('"')
    return values


VERSIONS = read_env_file(ROOT / "deploy/versions.env")
# The Kafka votes topic's partitions: more consumers than this in one group sit idle.
VOTES_PARTITIONS = 6


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
        # A secret's variable is listed without its value: `[env: NAME]`.
        if name.startswith("BANDVOTE_") and not re.search(rf"\[env: {re.escape(name)}[=\]]", text):
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


def is_bandvote_image(image):
    """The bandvote image, under whatever registry an overlay gives it (not bandvote-grafana)."""
    return image.split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1] == "bandvote"


def pod_template(obj):
    spec = obj.get("spec", {})
    return spec.get("template", {}) if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job") else {}


def containers_of(obj):
    return pod_template(obj).get("spec", {}).get("containers", [])


# Every CRD-backed kind the manifests use must be checked by some schema: these groups by the CRDs
# of the Go modules (deploycheck/crds.py), kafka.strimzi.io by Strimzi's Java model. GKE's own
# policy kinds (networking.gke.io) are published in GoogleCloudPlatform/gke-gateway-api
# (config/crd/), which no module this check can download carries: check_gke_policies checks their
# targets and the rules named there.
GKE_POLICY_GROUP = "networking.gke.io"
# Kinds without a namespace; every other object must be in ours (kubectl apply -k puts an object
# without one in the current namespace, `default` on a fresh cluster).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer", "CustomResourceDefinition",
                  "StorageClass", "PriorityClass", "GatewayClass", "ClusterTriggerAuthentication"}


def check_rendered(name, text, schemas, strimzi_objects):
    docs = [d for d in yaml.safe_load_all(text) if d]
    print(f"== {name}: {len(docs)} objects")
    listen_ports = {}  # (pod name, container name) -> port
    services = {}
    for obj in docs:
        where = f"{name} {obj['kind']}/{obj['metadata']['name']}"
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        if obj["kind"] not in CLUSTER_SCOPED and obj["metadata"].get("namespace") != NAMESPACE:
            fail(f"{where}: namespace {obj['metadata'].get('namespace')!r}, not {NAMESPACE} (`kubectl apply -k` puts it in the current namespace, `default`)")
        if group == "kafka.strimzi.io":
            strimzi_objects.append({"where": where, "object": obj})
            continue
        if group == GKE_POLICY_GROUP:
            continue
        if "." in group and not group.endswith(".k8s.io") or group in schemas.groups():
            if not schemas.knows(obj):
                fail(f"{where}: no CRD schema for {obj['apiVersion']} {obj['kind']} in the pinned versions")
            else:
                for error in schemas.errors(obj):
                    fail(f"{where}: {error}")
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
            if not (container.get("readinessProbe") and container.get("livenessProbe")):
                fail(f"{cwhere}: needs readiness and liveness probes")
            check_secrets_not_in_command_line(cwhere, container)
            if not is_bandvote_image(container["image"]):
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
    # Services target ports some container of their pods listens on; the routes target Services.
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
        if obj["kind"] == "HTTPRoute":
            for rule in obj["spec"].get("rules", []):
                for backend in rule.get("backendRefs", []):
                    svc = services.get(backend["name"])
                    if not svc or backend.get("port") not in [p["port"] for p in svc["spec"]["ports"]]:
                        fail(f"{name} HTTPRoute/{obj['metadata']['name']}: no Service {backend['name']}:{backend.get('port')}")
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "prometheus":
            regex = re.search(r'regex: "([\d|]+)"', obj["data"]["prometheus.yml"]).group(1)
            scraped = {int(p) for p in regex.split("|")}
            for key, port in listen_ports.items():
                if port not in scraped:
                    fail(f"{name} Prometheus does not scrape {key} on {port}")
    return docs


def check_secrets_not_in_command_line(where, container):
    """A Secret expanded into args/command ($(VAR)) is on the process's command line, in /proc."""
    secret_vars = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for arg in container.get("command", []) + container.get("args", []):
        for var in re.findall(r"\$\((\w+)\)", arg):
            if var in secret_vars:
                fail(f"{where}: the Secret variable {var} is expanded into the command line ({arg!r})")


# ---------------------------------------------------------------------------------------------
# Strimzi: the Java model, versions, and the pods the operator will create.

def run_strimzi_model(objects):
    """Runs StrimziCheck.java over every Strimzi object of every render; returns the pods it made."""
    print(f"== Strimzi {VERSIONS['STRIMZI_VERSION']} Java API model: {len(objects)} objects")
    java, classpath = os.environ.get("BANDVOTE_JAVA"), os.environ.get("BANDVOTE_STRIMZI_CLASSPATH")
    if not java or not classpath:
        fail("Strimzi model: BANDVOTE_JAVA and BANDVOTE_STRIMZI_CLASSPATH are not set (run scripts/check-deploy)")
        return []
    # The operator as the guide installs it: its default security provider.
    provider = VERSIONS.get("STRIMZI_POD_SECURITY_PROVIDER", "baseline")
    result = subprocess.run(
        [java, "-cp", classpath, str(ROOT / "scripts/deploycheck/strimzi/StrimziCheck.java"), provider],
        input=json.dumps(objects), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        fail(f"Strimzi model: StrimziCheck.java failed: {result.stderr.strip()[-2000:]}")
        return []
    out = json.loads(result.stdout)
    for error in out["errors"]:
        fail(f"Strimzi model: {error}")
    for item in objects:
        obj, where = item["object"], item["where"]
        annotations = obj["metadata"].get("annotations", {})
        for ignored in ("strimzi.io/node-pools", "strimzi.io/kraft"):
            if ignored in annotations:
                fail(f"{where}: annotation {ignored} has been ignored since Strimzi 0.48 (node pools and KRaft are the only mode)")
        if obj["kind"] == "Kafka":
            check_kafka_versions(where, obj["spec"]["kafka"])
        if obj["kind"] in ("KafkaNodePool", "KafkaTopic") and obj["metadata"].get("labels", {}).get("strimzi.io/cluster") != "bandvote":
            fail(f"{where}: {obj['kind']} must carry the label strimzi.io/cluster=bandvote")
    return out["pods"]


def version_tuple(version):
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


@functools.cache
def strimzi_built_kafka():
    """The Kafka the pinned Strimzi operator is built against: `kafka.version` of its published
    parent POM (io.strimzi:strimzi, fetched by scripts/check-deploy). Strimzi runs no newer Kafka."""
    path = os.environ.get("BANDVOTE_STRIMZI_POM")
    if not path:
        return None
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pathlib.Path(path).read_text())
    return found.group(1).strip() if found else None


def metadata_version_verdicts(versions):
    """Kafka's own MetadataVersion (kafka-server-common at KAFKA_VERSION) on each metadata version:
    {version: None if accepted, else why not}."""
    java, classpath = os.environ.get("BANDVOTE_JAVA"), os.environ.get("BANDVOTE_KAFKA_CLASSPATH")
    result = subprocess.run([java, "-cp", classpath, str(ROOT / "scripts/deploycheck/kafka/MetadataVersionCheck.java"), *versions],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return {v: f"MetadataVersionCheck.java failed: {result.stderr.strip()[-500:]}" for v in versions}
    verdicts = {}
    for line in result.stdout.splitlines():
        version, _, verdict = line.partition(" ")
        verdicts[version] = None if verdict == "ok" else verdict
    return verdicts


def check_kafka_versions(where, kafka):
    """A Kafka resource's version and metadataVersion. Strimzi's list of the Kafka versions it runs
    (kafka-versions.yaml) is in no artifact it publishes, so three sources: deploy/versions.env's
    STRIMZI_KAFKA_LINES, copied by hand from that file (see the citation there); the Kafka its
    published parent POM builds the operator against (an upper bound); and Kafka's own
    MetadataVersion at the pinned release for metadataVersion."""
    version, pinned = kafka.get("version"), VERSIONS["KAFKA_VERSION"]
    strimzi = VERSIONS["STRIMZI_VERSION"]
    if version != pinned:
        fail(f"{where}: Kafka {version}, deploy/versions.env pins {pinned}")
    if not version:
        return
    if ".".join(version.split(".")[:2]) not in VERSIONS["STRIMZI_KAFKA_LINES"].split():
        fail(f"{where}: Strimzi {strimzi} does not run Kafka {version} (lines {VERSIONS['STRIMZI_KAFKA_LINES']}, from its kafka-versions.yaml)")
    built = strimzi_built_kafka()
    if built is None:
        fail(f"{where}: Strimzi {strimzi}'s parent POM (BANDVOTE_STRIMZI_POM) is not there or names no kafka.version (run scripts/check-deploy)")
    elif version_tuple(version) > version_tuple(built):
        fail(f"{where}: Kafka {version} is newer than the Kafka {built} Strimzi {strimzi} is built against (kafka.version of io.strimzi:strimzi:{strimzi}); it does not run it")
    metadata = kafka.get("metadataVersion")
    if metadata is not None:
        if not os.environ.get("BANDVOTE_KAFKA_CLASSPATH"):
            fail(f"{where}: BANDVOTE_KAFKA_CLASSPATH (kafka-server-common {pinned}) is not set (run scripts/check-deploy)")
            return
        why = metadata_version_verdicts([str(metadata)]).get(str(metadata), "no verdict")
        if why:
            fail(f"{where}: metadataVersion {metadata}: Kafka {pinned} {why}")


def strimzi_network_policies(kafka, namespace):
    """The NetworkPolicies Strimzi writes for a Kafka cluster: one ingress rule per listener port
    (its networkPolicyPeers, or everyone when there are none), and the replication and control
    ports (9090, 9091) for the cluster's own pods, its entity operator and the cluster operator."""
    name = kafka["metadata"]["name"]
    rules = []
    for listener in kafka["spec"]["kafka"]["listeners"]:
        rule = {"ports": [{"port": listener["port"], "protocol": "TCP"}]}
        if listener.get("networkPolicyPeers"):
            rule["from"] = listener["networkPolicyPeers"]
        rules.append(rule)
    rules.append({"ports": [{"port": 9090}, {"port": 9091}], "from": [
        {"podSelector": {"matchLabels": {"strimzi.io/kind": "Kafka", "strimzi.io/cluster": name}}},
        {"podSelector": {"matchLabels": {"strimzi.io/name": f"{name}-entity-operator"}}},
        {"podSelector": {"matchLabels": {"strimzi.io/kind": "cluster-operator"}}, "namespaceSelector": {}},
    ]})
    return [{
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"{name}-network-policy-kafka", "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"strimzi.io/cluster": name, "strimzi.io/kind": "Kafka", "strimzi.io/name": f"{name}-kafka"}},
                 "policyTypes": ["Ingress"], "ingress": rules},
    }]


# ---------------------------------------------------------------------------------------------
# Pod Security "restricted".

def acme_solver_pod():
    """The HTTP-01 solver pod cert-manager creates in our namespace, as its source (pinned
    version, pkg/issuer/acme/http/pod.go) builds it with the chart's defaults."""
    return {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "acmesolver", "ports": [{"name": "http", "containerPort": 8089}], "securityContext": {
            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    }


def check_pod_security(name, docs, operator_pods):
    pods = [(f"{name} {o['kind']}/{o['metadata']['name']}", podsecurity.pod_spec_of(o)) for o in docs]
    pods = [(w, s) for w, s in pods if s is not None]
    pods += [(f"{name} {p['where']} (made by the Strimzi operator)", p["spec"]) for p in operator_pods]
    if any(o["kind"] == "Issuer" for o in docs):
        pods.append((f"{name} cert-manager HTTP-01 solver pod", acme_solver_pod()))
    namespace = next(o for o in docs if o["kind"] == "Namespace")
    if namespace["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        fail(f"{name}: the namespace must enforce the restricted Pod Security Standard")
    for where, spec in pods:
        for violation in podsecurity.violations(spec):
            fail(f"{where}: Pod Security restricted: {violation}")
    return len(pods)


# ---------------------------------------------------------------------------------------------
# NetworkPolicies: every arrow of the data flow, and the ones that must stay closed.

NAMESPACE = "bandvote"
INTERNET = {"name": "the internet", "namespace": None, "ip": "198.51.100.7", "labels": {}}
LOAD_BALANCER = {"name": "the load balancer (Google front end)", "namespace": None, "ip": "35.191.10.20", "labels": {}}
OTHER_NAMESPACE = {"name": "a pod of another namespace", "namespace": "tenant", "labels": {"app.kubernetes.io/name": "api"}}
OTHER_POD = {"name": "an unrelated pod of this namespace", "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": "debug"}}
NAMESPACES = {ns: {"kubernetes.io/metadata.name": ns} for ns in (NAMESPACE, "strimzi", "keda", "cert-manager", "tenant")}


def endpoints(docs, operator_pods):
    """The pods of the render as evaluator endpoints, by app name, with the operator-made ones."""
    pods = {}
    for obj in docs:
        template = pod_template(obj)
        if not template:
            continue
        labels = template.get("metadata", {}).get("labels", {})
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", []) if "name" in p}
        pods[labels.get("app.kubernetes.io/name", obj["metadata"]["name"])] = {
            "name": obj["metadata"]["name"], "namespace": NAMESPACE, "labels": labels, "ports": ports}
    kafka = next((o for o in docs if o["kind"] == "Kafka"), None)
    if kafka:
        cluster = kafka["metadata"]["name"]
        pods["kafka"] = {"name": "Kafka node", "namespace": NAMESPACE, "ports": {}, "labels": {
            "strimzi.io/cluster": cluster, "strimzi.io/kind": "Kafka", "strimzi.io/name": f"{cluster}-kafka",
            "strimzi.io/pool-name": "combined"}}
        pods["entity-operator"] = {"name": "entity operator", "namespace": NAMESPACE, "ports": {}, "labels": {
            "strimzi.io/cluster": cluster, "strimzi.io/kind": "Kafka", "strimzi.io/name": f"{cluster}-entity-operator"}}
    pods["acme-solver"] = {"name": "cert-manager HTTP-01 solver", "namespace": NAMESPACE, "ports": {"http": 8089},
                           "labels": {"acme.cert-manager.io/http01-solver": "true"}}
    pods["keda-operator"] = {"name": "KEDA operator", "namespace": "keda", "ports": {}, "labels": {"app": "keda-operator", "app.kubernetes.io/name": "keda-operator"}}
    pods["strimzi-operator"] = {"name": "Strimzi cluster operator", "namespace": "strimzi", "ports": {}, "labels": {"strimzi.io/kind": "cluster-operator"}}
    return pods


def check_network(name, docs, extra_policies=()):
    policies = [o for o in docs if o["kind"] == "NetworkPolicy"] + list(extra_policies)
    for policy in policies:
        policy["metadata"].setdefault("namespace", NAMESPACE)
    kafka = next((o for o in docs if o["kind"] == "Kafka"), None)
    if kafka:
        policies += strimzi_network_policies(kafka, NAMESPACE)
    pods = endpoints(docs, [])
    open_arrows = [
        (LOAD_BALANCER, "grpc", 3000), (LOAD_BALANCER, "wasm", 8080), (LOAD_BALANCER, "api", 8000),
        (LOAD_BALANCER, "acme-solver", 8089),
        ("grpc", "kafka", 9092), ("wasm", "kafka", 9092), ("consumer", "kafka", 9092),
        ("consumer", "redis", 6379), ("consumer", "mongodb", 27017),
        ("api", "redis", 6379), ("api", "mongodb", 27017), ("grafana", "redis", 6379),
        ("grpc", "redis", 6379), ("wasm", "redis", 6379), ("grafana", "prometheus", 9090), ("keda-operator", "prometheus", 9090),
        ("prometheus", "grpc", 3000), ("prometheus", "grpc", 3001), ("prometheus", "wasm", 8080),
        ("prometheus", "wasm", 8001), ("prometheus", "consumer", 9100), ("prometheus", "api", 8000),
        ("kafka", "kafka", 9091), ("kafka", "kafka", 9090), ("entity-operator", "kafka", 9091),
        ("strimzi-operator", "kafka", 9091),
    ]
    closed_arrows = [(INTERNET, target, port) for target, port in [
        ("redis", 6379), ("mongodb", 27017), ("kafka", 9092), ("kafka", 9091), ("consumer", 9100),
        ("api", 8000), ("grpc", 3000), ("grpc", 3001), ("wasm", 8001), ("prometheus", 9090), ("grafana", 3000)]]
    closed_arrows += [(LOAD_BALANCER, target, port) for target, port in [
        ("redis", 6379), ("mongodb", 27017), ("kafka", 9092), ("consumer", 9100), ("grpc", 3001),
        ("wasm", 8001), ("prometheus", 9090), ("grafana", 3000)]]
    closed_arrows += [(OTHER_NAMESPACE, target, port) for target, port in [
        ("kafka", 9092), ("redis", 6379), ("mongodb", 27017), ("prometheus", 9090), ("consumer", 9100)]]
    closed_arrows += [(OTHER_POD, "kafka", 9092), (OTHER_POD, "redis", 6379), (OTHER_POD, "mongodb", 27017),
                      ("api", "kafka", 9092), ("grafana", "mongodb", 27017), ("grpc", "mongodb", 27017),
                      ("wasm", "mongodb", 27017), ("keda-operator", "redis", 6379)]
    # Replicated Redis (components/redis-sentinel): the apps ask the Sentinels where the primary is;
    # the Redis pods replicate from each other and the Sentinels talk among themselves.
    redis = next((o for o in docs if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "redis"), None)
    if redis and any(c["name"] == "sentinel" for c in redis["spec"]["template"]["spec"]["containers"]):
        open_arrows += [(app, "redis", 26379) for app in ("consumer", "api", "grpc", "wasm")]
        open_arrows += [("redis", "redis", 6379), ("redis", "redis", 26379)]
        closed_arrows += [(outside, "redis", 26379) for outside in (INTERNET, LOAD_BALANCER, OTHER_NAMESPACE, OTHER_POD, "grafana")]

    def resolve(x):
        return pods[x] if isinstance(x, str) else x

    def label(x):
        return x if isinstance(x, str) else x["name"]

    for source, target, port in open_arrows:
        if isinstance(source, str) and source not in pods or target not in pods:
            fail(f"{name} network: no pod {source if source not in pods else target} to check {label(source)} → {target}:{port}")
            continue
        ok, why = netpol.can_reach(policies, resolve(source), resolve(target), port, namespaces=NAMESPACES)
        if not ok:
            fail(f"{name} network: {label(source)} cannot reach {target}:{port} ({why})")
    for source, target, port in closed_arrows:
        if target not in pods:
            continue
        ok, why = netpol.can_reach(policies, resolve(source), resolve(target), port, namespaces=NAMESPACES)
        if ok:
            fail(f"{name} network: {label(source)} can reach {target}:{port} ({why}); it must not")
    return len(open_arrows) + len(closed_arrows)


def route_backend(routes, path):
    """Where the Gateway sends a request path: (service, port), "redirect", or None.
    Gateway API precedence: an Exact match beats a prefix, a longer prefix a shorter one."""
    best = None
    for route in routes:
        for rule in route["spec"].get("rules", []):
            for match in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
                kind, value = match["path"].get("type", "PathPrefix"), match["path"]["value"]
                if kind == "Exact":
                    hit, rank = path == value, (2, len(value))
                else:
                    prefix = value.rstrip("/")
                    hit, rank = path == prefix or path.startswith(prefix + "/") or value == "/", (1, len(prefix))
                if hit and (best is None or rank > best[0]):
                    if any(f["type"] == "RequestRedirect" for f in rule.get("filters", [])):
                        target = "redirect"
                    else:
                        target = tuple((b["name"], b.get("port")) for b in rule.get("backendRefs", []))
                        target = target[0] if len(target) == 1 else target or None
                    best = (rank, target)
    return best[1] if best else None


def check_routes(name, docs):
    routes = [o for o in docs if o["kind"] == "HTTPRoute" and o["metadata"]["name"] == "bandvote"]
    if not routes:
        fail(f"{name}: no HTTPRoute bandvote")
        return
    expected = {
        "/grpc/votes": ("grpc", 3000), "/wasm/votes": ("wasm", 8080), "/api/results": ("api", 8000),
        "/api/stream": ("api", 8000), "/": ("api", 8000), "/assets/app.js": ("api", 8000),
        "/metrics": "redirect", "/readyz": "redirect", "/metrics/": "redirect",
    }
    for path, want in expected.items():
        got = route_backend(routes, path)
        if got != want:
            fail(f"{name} route {path}: goes to {got}, expected {want}" + (" (the API's internal endpoint must not be public)" if want == "redirect" else ""))
    gateways = [o for o in docs if o["kind"] == "Gateway"]
    for gw in gateways:
        if not gw["spec"]["gatewayClassName"].startswith("gke-l7-"):
            fail(f"{name} Gateway/{gw['metadata']['name']}: not one of GKE's gateway classes")
    tls = [l for gw in gateways for l in gw["spec"]["listeners"] if l["protocol"] == "HTTPS"]
    if name.endswith("production"):
        if not tls:
            fail(f"{name}: production serves HTTPS (components/tls)")
        for route in routes:
            if any(ref.get("sectionName") != "https" for ref in route["spec"]["parentRefs"]):
                fail(f"{name}: HTTPRoute bandvote must attach to the HTTPS listener only")


# GKE's HealthCheckPolicy (networking.gke.io/v1), as GoogleCloudPlatform/gke-gateway-api publishes
# it in config/crd/networking.gke.io_healthcheckpolicies.yaml (read at commit e26e4931336411): a
# config of exactly two fields, `type` and the protocol's own health check, named after the type;
# portSpecification one of three values. And a check that names a `port` must say
# portSpecification: USE_FIXED_PORT: issue 32's review of GKE's CRDs found such policies refused by
# a CEL rule; the version of the file read above carries no x-kubernetes-validations, so the rule
# is written here, not read from it. Checked here until a real schema can be installed in the API
# server of check-deploy.
HEALTH_CHECK_FIELDS = {"TCP": "tcpHealthCheck", "HTTP": "httpHealthCheck", "HTTPS": "httpsHealthCheck",
                       "HTTP2": "http2HealthCheck", "GRPC": "grpcHealthCheck"}
PORT_SPECIFICATIONS = {"USE_FIXED_PORT", "USE_NAMED_PORT", "USE_SERVING_PORT"}


def health_check_policy_problems(policy):
    problems = []
    config = policy["spec"].get("default", {}).get("config", {})
    kind = config.get("type", "HTTP")
    field = HEALTH_CHECK_FIELDS.get(kind)
    if field is None:
        return [f"config.type {kind!r} is not one of {sorted(HEALTH_CHECK_FIELDS)}"]
    if set(config) != {"type", field}:
        problems.append(f"config must hold exactly `type` and `{field}` (has {sorted(config)})")
    for name, check in ((k, v) for k, v in config.items() if k in HEALTH_CHECK_FIELDS.values()):
        specification = check.get("portSpecification")
        if specification is not None and specification not in PORT_SPECIFICATIONS:
            problems.append(f"config.{name}.portSpecification {specification!r} is not one of {sorted(PORT_SPECIFICATIONS)}")
        if "port" in check and specification != "USE_FIXED_PORT":
            problems.append(f"config.{name}.port without portSpecification: USE_FIXED_PORT; GKE refuses the policy and the load balancer probes GET /")
    return problems


def check_gke_policies(name, docs):
    """GCPBackendPolicy / HealthCheckPolicy: target existing Services; /api/stream stays open for an
    hour; health checks ask /readyz on a port the Service serves."""
    services = {o["metadata"]["name"]: o for o in docs if o["kind"] == "Service"}
    backend = {}
    for obj in docs:
        if obj["apiVersion"].split("/")[0] != GKE_POLICY_GROUP:
            continue
        target = obj["spec"]["targetRef"]["name"]
        if target not in services:
            fail(f"{name} {obj['kind']}/{obj['metadata']['name']}: no Service {target}")
            continue
        if obj["kind"] == "GCPBackendPolicy":
            backend[target] = obj["spec"]["default"]
        if obj["kind"] == "HealthCheckPolicy":
            for problem in health_check_policy_problems(obj):
                fail(f"{name} HealthCheckPolicy/{obj['metadata']['name']}: {problem}")
            check = obj["spec"]["default"]["config"].get("httpHealthCheck", {})
            if check.get("requestPath") != "/readyz" or check.get("port") not in [p["port"] for p in services[target]["spec"]["ports"]]:
                fail(f"{name} HealthCheckPolicy/{obj['metadata']['name']}: must check /readyz on the Service's port")
    if backend.get("api", {}).get("timeoutSec", 30) < 3600:
        fail(f"{name}: the api's GCPBackendPolicy must keep /api/stream (SSE) open for an hour (timeoutSec 3600)")
    for svc in ("grpc", "wasm", "api"):
        if not any(o["kind"] == "HealthCheckPolicy" and o["spec"]["targetRef"]["name"] == svc for o in docs):
            fail(f"{name}: no HealthCheckPolicy for {svc} (the load balancer would probe GET /)")


# ---------------------------------------------------------------------------------------------
# Autoscaling, disruption budgets, images, stores, placement.

def exported_metrics():
    source = (ROOT / "crates/bandvote-runtime/src/metrics.rs").read_text()
    return set(re.findall(r'pub const \w+: &str = "(bandvote_\w+)";', source))


def check_workloads(name, docs):
    deployments = {o["metadata"]["name"]: o for o in docs if o["kind"] == "Deployment"}
    statefulsets = {o["metadata"]["name"]: o for o in docs if o["kind"] == "StatefulSet"}
    # Every ConfigMap a pod mounts is rendered under that name (a generator's hash suffix is not
    # applied to a name a component's patch writes).
    config_maps = {o["metadata"]["name"] for o in docs if o["kind"] == "ConfigMap"}
    for obj in docs:
        for volume in pod_template(obj).get("spec", {}).get("volumes", []):
            wanted = (volume.get("configMap") or {}).get("name")
            if wanted and wanted not in config_maps and not volume["configMap"].get("optional"):
                fail(f"{name} {obj['kind']}/{obj['metadata']['name']}: volume {volume['name']} mounts ConfigMap {wanted}, which is not rendered")
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in docs if o["kind"] == "ScaledObject"}
    for hpa in (o for o in docs if o["kind"] == "HorizontalPodAutoscaler"):
        fail(f"{name} HorizontalPodAutoscaler/{hpa['metadata']['name']}: the consumer scales through KEDA on its lag; no other autoscaler")
    consumer = scaled.get("consumer")
    if not consumer:
        fail(f"{name}: no ScaledObject for the consumer")
    else:
        spec = consumer["spec"]
        if "replicas" in deployments["consumer"]["spec"]:
            fail(f"{name} Deployment/consumer: sets replicas, which every apply would reset under the autoscaler")
        if not 2 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100) <= VOTES_PARTITIONS:
            fail(f"{name} ScaledObject/consumer: replicas must stay within 2..{VOTES_PARTITIONS} (a second consumer when one dies; no more than the votes partitions)")
        window = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds")
        if not window or window < 300:
            fail(f"{name} ScaledObject/consumer: needs a scale-down stabilization window of at least 300 s (each step rebalances)")
        metrics = exported_metrics()
        for trigger in spec.get("triggers", []):
            if trigger["type"] != "prometheus":
                fail(f"{name} ScaledObject/consumer: trigger {trigger['type']}, expected prometheus on the lag")
                continue
            named = set(re.findall(r"\bbandvote_\w+", trigger["metadata"].get("query", "")))
            if "bandvote_consumer_lag_messages" not in named or named - metrics:
                fail(f"{name} ScaledObject/consumer: the query must use bandvote_consumer_lag_messages (names {sorted(named)}, unknown {sorted(named - metrics)})")
            server = trigger["metadata"].get("serverAddress", "")
            if not re.match(r"http://prometheus(\.bandvote(\.svc)?)?:9090$", server):
                fail(f"{name} ScaledObject/consumer: serverAddress {server} is not the namespace's Prometheus")
    topic = next((o for o in docs if o["kind"] == "KafkaTopic" and o["metadata"]["name"] == "votes"), None)
    if topic and topic["spec"]["partitions"] != VOTES_PARTITIONS:
        fail(f"{name}: the votes topic has {VOTES_PARTITIONS} partitions")
    # Disruption budgets must let one pod go at the smallest replica count (or a drain blocks).
    for pdb in (o for o in docs if o["kind"] == "PodDisruptionBudget"):
        target = pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        if target in scaled:
            replicas = scaled[target]["spec"].get("minReplicaCount", 1)
        else:
            replicas = deployments.get(target, statefulsets.get(target, {"spec": {}}))["spec"].get("replicas", 1)
        allowed = pdb["spec"].get("maxUnavailable", 0) if "maxUnavailable" in pdb["spec"] else replicas - pdb["spec"].get("minAvailable", 0)
        if allowed < 1:
            fail(f"{name} PodDisruptionBudget/{pdb['metadata']['name']}: allows no eviction with {replicas} replica(s); node drains would block")
    # StatefulSets' governing Services are headless.
    services = {o["metadata"]["name"]: o for o in docs if o["kind"] == "Service"}
    for sts in statefulsets.values():
        svc = services.get(sts["spec"]["serviceName"])
        if not svc or svc["spec"].get("clusterIP") != "None":
            fail(f"{name} StatefulSet/{sts['metadata']['name']}: its serviceName {sts['spec']['serviceName']} must be a headless Service")
    # Images: overlays pull from a registry; Grafana never downloads plugins at start.
    for obj in deployments.values():
        for container in containers_of(obj):
            image = container["image"]
            if name != "deploy/k8s" and (is_bandvote_image(image) or image.split(":")[0].endswith("bandvote-grafana")) and "/" not in image:
                fail(f"{name} {obj['metadata']['name']}/{container['name']}: image {image} names no registry; there is no public image of that name")
            if any(e["name"] == "GF_INSTALL_PLUGINS" for e in container.get("env", [])):
                fail(f"{name} {obj['metadata']['name']}: GF_INSTALL_PLUGINS downloads at every start; the plugin is baked into the image")
    check_trusted_proxies(name, docs, deployments)
    grafana = deployments.get("grafana")
    if grafana and "grafana/grafana" in containers_of(grafana)[0]["image"]:
        fail(f"{name} Deployment/grafana: runs the stock image; the plugin comes with bandvote-grafana (deploy/grafana/Dockerfile)")
    # Redis: a memory cap that never evicts the counters.
    redis_conf = next((o["data"]["redis.conf"] for o in docs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "redis"), "")
    if not re.search(r"^maxmemory \d+", redis_conf, re.M) or not re.search(r"^maxmemory-policy noeviction$", redis_conf, re.M):
        fail(f"{name} Redis: needs maxmemory and maxmemory-policy noeviction in redis.conf")
    # MongoDB: the services log in as the application user, not the root user.
    mongo = statefulsets.get("mongodb")
    if mongo:
        root_user = next((e.get("value") for e in containers_of(mongo)[0].get("env", []) if e["name"] == "MONGO_INITDB_ROOT_USERNAME"), None)
        for obj in deployments.values():
            for container in containers_of(obj):
                for env in container.get("env", []):
                    if env["name"] == "BANDVOTE_MONGO_URL":
                        user = re.match(r"mongodb://([^:@/]+)", env.get("value", ""))
                        if not user or user.group(1) == root_user or "authSource=admin" in env["value"]:
                            fail(f"{name} {obj['metadata']['name']}: BANDVOTE_MONGO_URL logs in as MongoDB's root user; use the application user")
    # Production: one Kafka node per machine.
    if name.endswith("production"):
        kafka = next(o for o in docs if o["kind"] == "Kafka")
        pool = next(o for o in docs if o["kind"] == "KafkaNodePool")
        affinity = (pool["spec"].get("template", {}).get("pod") or kafka["spec"]["kafka"].get("template", {}).get("pod") or {}).get("affinity", {})
        terms = affinity.get("podAntiAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])
        # The labels Strimzi gives its pods (Labels.generateDefaultLabels): the entity operator's
        # carry strimzi.io/kind: Kafka too.
        node_labels = {"strimzi.io/cluster": "bandvote", "strimzi.io/kind": "Kafka", "strimzi.io/name": "bandvote-kafka"}
        entity_operator = {"strimzi.io/cluster": "bandvote", "strimzi.io/kind": "Kafka", "strimzi.io/name": "bandvote-entity-operator"}
        if not any(t.get("topologyKey") == "kubernetes.io/hostname" and netpol.selector_matches(t.get("labelSelector"), node_labels) for t in terms):
            fail(f"{name}: Kafka nodes need a required pod anti-affinity on kubernetes.io/hostname matching the Kafka pods")
        if any(netpol.selector_matches(t.get("labelSelector"), entity_operator) for t in terms):
            fail(f"{name}: the Kafka nodes' required anti-affinity also selects the entity operator's pod; with 3 nodes on 3 machines one of them never schedules (select strimzi.io/name: bandvote-kafka)")


# Google's external Application Load Balancer connects from these ranges (its front ends and health
# checks); the containers it reaches must believe their X-Forwarded-For, or every client counts as
# one of a few proxies in the per-client limits.
GOOGLE_FRONT_ENDS = ("35.191.0.0/16", "130.211.0.0/22")
BEHIND_LOAD_BALANCER = {("grpc", "gateway"), ("wasm", "gateway"), ("api", "api")}


def check_trusted_proxies(name, docs, deployments):
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in docs if o["kind"] == "ConfigMap"}
    for deployment, container_name in sorted(BEHIND_LOAD_BALANCER):
        container = next((c for c in containers_of(deployments.get(deployment, {"kind": "Deployment"})) if c["name"] == container_name), None)
        if container is None:
            continue
        where = f"{name} Deployment/{deployment} container {container_name}"
        env = {e["name"]: e for e in container.get("env", [])}
        value = None
        if "--trusted-proxies" in container.get("args", []):
            value = container["args"][container["args"].index("--trusted-proxies") + 1]
        elif "BANDVOTE_TRUSTED_PROXIES" in env:
            entry = env["BANDVOTE_TRUSTED_PROXIES"]
            ref = entry.get("valueFrom", {}).get("configMapKeyRef")
            value = config_maps.get(ref["name"], {}).get(ref["key"]) if ref else entry.get("value")
        if value is None:
            fail(f"{where}: behind Google's load balancer without --trusted-proxies (BANDVOTE_TRUSTED_PROXIES): every client is one of its front ends to the per-client limits")
            continue
        try:
            networks = [ipaddress.ip_network(v.strip(), strict=False) for v in value.split(",") if v.strip()]
        except ValueError as error:
            fail(f"{where}: BANDVOTE_TRUSTED_PROXIES {value!r}: {error}")
            continue
        for front_end in map(ipaddress.ip_network, GOOGLE_FRONT_ENDS):
            if not any(front_end.subnet_of(n) for n in networks if n.version == front_end.version):
                fail(f"{where}: BANDVOTE_TRUSTED_PROXIES {value!r} leaves out Google's front ends {front_end}")


COMPOSE_DIR = ROOT / "deploy/compose"


def compose_config(files, env_file):
    """The model Compose v2's loader makes of `files` (in deploy/compose, merged in order) with the
    variables of `env_file` and none of this process's environment: (model or None, errors)."""
    args = [COMPOSE, "-strict", "-project-directory", str(COMPOSE_DIR), "-env-file", str(env_file)]
    result = subprocess.run(args + [str(COMPOSE_DIR / f) for f in files], capture_output=True, text=True,
                            check=False, env={"PATH": os.environ["PATH"]})
    if result.returncode == 3:  # loaded, with warnings
        return json.loads(result.stdout), result.stderr.strip()
    if result.returncode != 0:
        return None, result.stderr.strip()
    return json.loads(result.stdout), ""


def check_compose():
    print("== deploy/compose/docker-compose.yml (Compose v2's loader)")
    # Every password is required (no fallbacks): the example file supplies them for the check.
    config, errors = compose_config(["docker-compose.yml"], ROOT / "deploy/compose/.env.example")
    if errors:
        fail(f"compose config: {errors[-2000:]}")
    if config is None:
        return None
    ports = {}
    for name, service in config["services"].items():
        if not is_bandvote_image(service.get("image", "")):
            continue
        command = service.get("command") or []
        port = check_bandvote_container(f"compose {name}", command, list(service.get("environment") or {}))
        ports[name] = port
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        if f":{port}/" not in test:
            fail(f"compose {name}: healthcheck `{test}` does not probe port {port}")
    for name, service in config["services"].items():
        for dependency in service.get("depends_on") or {}:
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
    for internal in ("/metrics", "/readyz"):
        if not re.search(rf"location (= )?{internal} \{{ return", nginx):
            fail(f"compose nginx.conf: {internal} of the API reaches the public (location / passes it)")
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        bare, _ = compose_config(["docker-compose.yml"], empty.name)
    if bare is not None:
        fail("compose: starts without passwords (a password has a fallback value)")
    grafana_ports = config["services"]["grafana"].get("ports") or []
    if not grafana_ports or not all(p.get("host_ip") == "127.0.0.1" for p in grafana_ports):
        fail(f"compose grafana: published on every interface ({grafana_ports}); bind it to 127.0.0.1")
    published = [p for s in config["services"].values() for p in s.get("ports") or []]
    if len(published) != 2:
        fail(f"compose: exactly two published ports (the app and Grafana), found {published}")
    # Data survives `docker compose down` / `up` only on named volumes, where each image writes.
    services = config["services"]
    data_dirs = {"kafka": services["kafka"]["environment"].get("KAFKA_LOG_DIRS", "/tmp/kraft-combined-logs"),
                 "redis": "/data", "mongodb": "/data/db"}
    for name, directory in data_dirs.items():
        mounts = [m for m in map(compose_mount, services[name].get("volumes") or []) if m[0] == "volume"]
        if not any(directory == target or directory.startswith(target.rstrip("/") + "/") for _, target in mounts):
            fail(f"compose {name}: writes its data to {directory}, which is on no named volume ({[t for _, t in mounts]}); down/up loses it")
    if services["kafka"]["image"] != f"apache/kafka:{VERSIONS['KAFKA_VERSION']}":
        fail(f"compose kafka: image {services['kafka']['image']} is not the pinned Kafka {VERSIONS['KAFKA_VERSION']}")
    for name, key in (("redis", "REDIS_IMAGE"), ("mongodb", "MONGO_IMAGE")):
        if services[name]["image"] != VERSIONS[key]:
            fail(f"compose {name}: image {services[name]['image']} is not the pinned {VERSIONS[key]}")
    # Redis: no password on a command line, a memory cap that never evicts.
    redis_command = " ".join(services["redis"].get("command") or [])
    if "--requirepass" in redis_command:
        fail("compose redis: the password is on redis-server's command line (visible in /proc)")
    if "--maxmemory " not in redis_command or "--maxmemory-policy noeviction" not in redis_command:
        fail("compose redis: needs --maxmemory and --maxmemory-policy noeviction")
    # MongoDB: the services log in as the application user.
    root_user = services["mongodb"]["environment"].get("MONGO_INITDB_ROOT_USERNAME")
    for name, service in services.items():
        url = (service.get("environment") or {}).get("BANDVOTE_MONGO_URL")
        if url and (url.startswith(f"mongodb://{root_user}:") or "authSource=admin" in url):
            fail(f"compose {name}: BANDVOTE_MONGO_URL logs in as MongoDB's root user")
    # Grafana: built with its plugin, the pinned versions, nothing downloaded at start.
    grafana = services["grafana"]
    if "GF_INSTALL_PLUGINS" in (grafana.get("environment") or {}):
        fail("compose grafana: GF_INSTALL_PLUGINS downloads the plugin at every start")
    args = (grafana.get("build") or {}).get("args") or {}
    if args.get("GRAFANA_VERSION") != VERSIONS["GRAFANA_VERSION"] or args.get("GRAFANA_REDIS_DATASOURCE_VERSION") != VERSIONS["GRAFANA_REDIS_DATASOURCE_VERSION"]:
        fail(f"compose grafana: build args {args} are not the pinned versions")
    return config


def check_compose_sentinel():
    """deploy/compose/redis-sentinel.yml over docker-compose.yml: the production overlay's Redis."""
    print("== deploy/compose/redis-sentinel.yml over docker-compose.yml (Compose v2's loader)")
    config, errors = compose_config(["docker-compose.yml", "redis-sentinel.yml"], ROOT / "deploy/compose/.env.example")
    if errors:
        fail(f"compose config with redis-sentinel.yml: {errors[-2000:]}")
    if config is None:
        return
    services = config["services"]
    scripts = ROOT / "deploy/k8s/components/redis-sentinel/scripts"
    # The names primary.sh asks, in order: each must be a node running redis.sh with that name, its
    # data on a named volume, and a Sentinel on its network under the same name.
    asked = re.search(r"for sentinel in ([^;]+);", (scripts / "primary.sh").read_text()).group(1).split()
    nodes = {}
    for name, service in services.items():
        aliases = ((service.get("networks") or {}).get("default") or {}).get("aliases") or []
        for alias in aliases:
            nodes[alias] = name
    for host in asked:
        node = nodes.get(host)
        if node is None:
            fail(f"compose redis-sentinel: no node answers to {host}, which primary.sh asks")
            continue
        service = services[node]
        if service.get("command") != ["sh", "/scripts/redis.sh"] or service["environment"].get("BANDVOTE_REDIS_NODE") != host:
            fail(f"compose redis-sentinel {node}: does not run redis.sh as {host}")
        mounts = dict((t, k) for k, t in map(compose_mount, service.get("volumes") or []))
        if mounts.get("/data") != "volume":
            fail(f"compose redis-sentinel {node}: /data is on no named volume")
        for target in ("/scripts", "/etc/redis/redis.conf"):
            if mounts.get(target) != "bind":
                fail(f"compose redis-sentinel {node}: {target} is not mounted from the repository")
        sentinels = [n for n, s in services.items() if s.get("network_mode") == f"service:{node}"
                     and s.get("command") == ["sh", "/scripts/sentinel.sh"]
                     and s["environment"].get("BANDVOTE_REDIS_NODE") == host]
        if len(sentinels) != 1:
            fail(f"compose redis-sentinel: {host} has {len(sentinels)} Sentinels on its network, not 1")
    for name, service in services.items():
        environment = service.get("environment") or {}
        for key in ("BANDVOTE_REDIS_URL", "BANDVOTE_ROUNDS_REDIS_URL"):
            url = environment.get(key)
            if url is None:
                continue
            match = re.fullmatch(r"redis-sentinel://:[^@]+@([^/]+)/\d+#bandvote", url)
            if not match or sorted(h.rsplit(":", 1)[0] for h in match.group(1).split(",")) != sorted(asked):
                fail(f"compose redis-sentinel {name}: {key} is not the Sentinels' URL of {asked} ({url})")


# What a client without a password may send a Sentinel: bandvote's clients (redis-rs asks each
# Sentinel its ROLE, then SENTINEL MASTERS and SLAVES), primary.sh and the probes. Everything else
# (SET, MONITOR, REMOVE, FAILOVER, CONFIG, ACL, SHUTDOWN: a pod that reaches port 26379 could point
# every client at its own Redis) takes the Sentinels' own user. The same default user is what
# `scripts/services ha` gives its Sentinels, where the failover test and `scripts/chaos --ha` run
# bandvote through them (without +role no client connected).
SENTINEL_READS = {"+ping", "+role", "+sentinel|masters", "+sentinel|master", "+sentinel|slaves", "+sentinel|replicas",
                  "+sentinel|get-master-addr-by-name"}


def check_sentinel_acl():
    """The Sentinel's configuration (components/redis-sentinel/scripts/sentinel.sh, run by the
    production overlay and compose's redis-sentinel.yml): the default user only asks."""
    print("== Sentinel users (components/redis-sentinel/scripts/sentinel.sh)")
    script = (ROOT / "deploy/k8s/components/redis-sentinel/scripts/sentinel.sh").read_text()
    users = dict(re.findall(r"^user (\S+) (.*)$", script, re.M))
    default = users.get("default", "").split()
    if "-@all" not in default or default.index("-@all") > min((i for i, r in enumerate(default) if r.startswith("+")), default=99):
        fail("sentinel.sh: the default user (no password: bandvote's clients give a Sentinel none) must start from -@all")
    extra = [r for r in default if r.startswith(("+", "~", "&", "%", "allcommands", "allkeys", "allchannels")) and r not in SENTINEL_READS]
    if extra:
        fail(f"sentinel.sh: the default user may also {extra}: whoever reaches port 26379 could reconfigure the Sentinels")
    tested = re.search(r"^user default (.*)$", (ROOT / "scripts/services").read_text(), re.M)
    if not tested or tested.group(1).split() != default:
        fail("sentinel.sh: the default user differs from the one `scripts/services ha` gives the Sentinels the "
             f"failover tests run bandvote through ({tested.group(1) if tested else 'none'})")
    peer = re.search(r"^sentinel sentinel-user (\S+)$", script, re.M)
    if not peer or not re.search(r"^sentinel sentinel-pass \S+$", script, re.M) or not users.get(peer.group(1), "").count(">"):
        fail("sentinel.sh: the Sentinels must log in to each other as a user with a password (sentinel sentinel-user / sentinel-pass)")


def compose_mount(volume):
    """(type, target) of a volume of the loader's model (always the long syntax there; an anonymous
    volume is a volume too, gone with its container)."""
    return volume.get("type"), volume.get("target")


def check_build():
    """The image build: dependencies cached between builds, no .env in the build context."""
    print("== Dockerfile, .dockerignore, deploy/grafana/Dockerfile")
    dockerfile = (ROOT / "Dockerfile").read_text()
    build = dockerfile[dockerfile.index(" AS build"):]
    build = build[:build.index("\nFROM ")]
    for cache in ("/usr/local/cargo/registry", "/src/target"):
        if f"--mount=type=cache,target={cache}" not in build.replace("\\\n", " "):
            fail(f"Dockerfile: the cargo build has no BuildKit cache mount for {cache}; every source change rebuilds every dependency")
    if not dockerfile.startswith("# syntax=docker/dockerfile:1"):
        fail("Dockerfile: RUN --mount needs the `# syntax=docker/dockerfile:1` line")
    # .dockerignore: Docker's rules (last matching pattern wins, ! re-includes, ** any depth).
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]

    def ignored(path):
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").lstrip("/")
            regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            if re.fullmatch(regex + "(/.*)?", path):
                result = not negate
        return result

    for secret in ("deploy/compose/.env", ".env", "deploy/compose/.env.local"):
        if not ignored(secret):
            fail(f".dockerignore: {secret} would be sent in the build context (and can end up in a layer)")
    for source in ("Cargo.toml", "crates/bandvote/src/main.rs", "deploy/compose/.env.example"):
        if ignored(source):
            fail(f".dockerignore: ignores {source}, which the build needs")
    # .gitignore keeps the compose stack's passwords out of git (a plain subset of git's rules:
    # a pattern with a slash is anchored at the root, one without matches a name at any depth).
    git_patterns = [l.strip() for l in (ROOT / ".gitignore").read_text().splitlines() if l.strip() and not l.startswith("#")]

    def git_ignored(path):
        result = False
        for pattern in git_patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            anchored = "/" in pattern
            candidates = [path] if anchored else [path.rsplit("/", 1)[-1]]
            if any(fnmatch.fnmatchcase(c, pattern.lstrip("/")) for c in candidates):
                result = not negate
        return result

    if not git_ignored("deploy/compose/.env"):
        fail(".gitignore: deploy/compose/.env (the compose stack's passwords) is not ignored; `git add -A` would commit it")
    if git_ignored("deploy/compose/.env.example"):
        fail(".gitignore: ignores deploy/compose/.env.example, the template the guide copies")
    grafana = (ROOT / "deploy/grafana/Dockerfile").read_text()
    for key in ("GRAFANA_VERSION", "GRAFANA_REDIS_DATASOURCE_VERSION"):
        if f"ARG {key}={VERSIONS[key]}\n" not in grafana:
            fail(f"deploy/grafana/Dockerfile: ARG {key} is not the pinned {VERSIONS[key]}")
    if "plugins install redis-datasource" not in grafana:
        fail("deploy/grafana/Dockerfile: does not install the redis-datasource plugin at build time")


def grafana_settings():
    """Grafana's provisioned settings: the image's ENV (deploy/grafana/Dockerfile), then the
    environment compose and the manifests add. Returns {environment variable: value}."""
    settings = {}
    lines = [l for l in (ROOT / "deploy/grafana/Dockerfile").read_text().splitlines() if not l.lstrip().startswith("#")]
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        if line.startswith("ENV "):
            settings.update(re.findall(r"(\w+)=(\S+)", line))
    return settings


def check_dashboards(overrides):
    print("== Grafana dashboards, as Grafana draws them")
    settings = {**grafana_settings(), **overrides}
    minimum = grafana_panels.duration_seconds(settings.get("GF_DASHBOARDS_MIN_REFRESH_INTERVAL", "5s"))
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        refresh = dashboard.get("refresh")
        if refresh:
            seconds = grafana_panels.duration_seconds(refresh)
            if seconds is None or seconds < minimum:
                fail(f"{path.name}: refresh {refresh} is below Grafana's min_refresh_interval ({settings.get('GF_DASHBOARDS_MIN_REFRESH_INTERVAL', '5s')}): Grafana raises it")
            # Grafana starts the dashboard's timer only for an interval of its time picker's list.
            intervals = (dashboard.get("timepicker") or {}).get("refresh_intervals") or grafana_panels.DEFAULT_REFRESH_INTERVALS
            if refresh not in intervals:
                fail(f"{path.name}: refresh {refresh} is not in timepicker.refresh_intervals {intervals}: no timer starts")
        for problem in grafana_panels.variable_problems(dashboard):
            fail(f"{path.name}: {problem}")
        for panel in dashboard.get("panels", []):
            try:
                problems = grafana_panels.panel_problems(panel)
            except ValueError as error:
                problems = [str(error)]
            for problem in problems:
                fail(f"{path.name} panel {panel.get('title')!r} ({panel.get('type')}): No data: {problem}")


def check_cloudrun(rendered_base):
    print("== deploy/cloudrun")
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
    # Cloud Run (from the connector's range) → internal load balancer → Redis / MongoDB, through the
    # namespace's policies plus from-cloud-run: the source address the pod sees is the connector's
    # only when the Service keeps it (externalTrafficPolicy: Local), a node's otherwise.
    connector_range = "10.8.0.0/28"
    text = (ROOT / "deploy/cloudrun/internal-lb.yaml").read_text().replace("${CONNECTOR_RANGE}", connector_range)
    objects = [o for o in yaml.safe_load_all(text) if o]
    policies = [o for o in rendered_base if o["kind"] == "NetworkPolicy"] + [o for o in objects if o["kind"] == "NetworkPolicy"]
    for policy in policies:
        policy["metadata"].setdefault("namespace", NAMESPACE)
    pods = endpoints(rendered_base, [])
    for svc in (o for o in objects if o["kind"] == "Service"):
        if svc["metadata"].get("annotations", {}).get("networking.gke.io/load-balancer-type") != "Internal":
            fail(f"cloudrun Service/{svc['metadata']['name']}: not an internal load balancer")
        preserved = svc["spec"].get("externalTrafficPolicy") == "Local"
        source_ip = "10.8.0.5" if preserved else "10.128.0.17"  # a connector instance, or a node
        source = {"name": f"Cloud Run via {svc['metadata']['name']}", "namespace": None, "ip": source_ip, "labels": {}}
        target = svc["spec"]["selector"]["app.kubernetes.io/name"]
        port = svc["spec"]["ports"][0]["targetPort"]
        ok, why = netpol.can_reach(policies, source, pods[target], port, namespaces=NAMESPACES)
        if not ok:
            fail(f"cloudrun: {source['name']} cannot reach {target}:{port} (source address {source_ip}"
                 + ("" if preserved else ", rewritten to a node's: externalTrafficPolicy is not Local") + f"; {why})")
        outsider = {"name": "a VPC address outside the connector", "namespace": None, "ip": "10.20.0.9", "labels": {}}
        if netpol.can_reach(policies, outsider, pods[target], port, namespaces=NAMESPACES)[0]:
            fail(f"cloudrun: {outsider['name']} can reach {target}:{port}")


def check_guide():
    """The cluster guide installs what deploy/versions.env pins, and nothing unpinned."""
    print("== deploy/README.md follows deploy/versions.env")
    path = ROOT / "deploy/README.md"
    if not path.exists():
        fail("deploy/README.md (the cluster guide) is missing")
        return
    text = path.read_text()
    if ". deploy/versions.env" not in text:
        fail("deploy/README.md: the guide must source deploy/versions.env before installing")
    for line in re.findall(r"^\s*helm (?:upgrade --install|install)[^\n]*(?:\\\n[^\n]*)*", text, re.M):
        chart = re.search(r"\s(\S+/\S+)\s", line)
        if "--version" not in line:
            fail(f"deploy/README.md: `{line.strip()[:80]}...` installs {chart.group(1) if chart else 'a chart'} without --version")
    for chart, key in (("strimzi/strimzi-kafka-operator", "STRIMZI_VERSION"), ("jetstack/cert-manager", "CERT_MANAGER_VERSION"), ("kedacore/keda", "KEDA_VERSION")):
        if not re.search(rf"{re.escape(chart)}[^\n]*(\\\n[^\n]*)*--version \"?\$\{{?{key}", text):
            fail(f"deploy/README.md: {chart} must be installed with --version ${key}")
    for secret_key in ("redis-password", "mongo-password", "mongo-root-password", "grafana-admin-password", "admin-token"):
        if secret_key not in text:
            fail(f"deploy/README.md: the Secret bandvote-secrets needs {secret_key}")


def main():
    check_grafana_copies()
    schemas = crds.Schemas()
    for directory in filter(None, os.environ.get("BANDVOTE_CRD_DIRS", "").split(":")):
        if schemas.load_dir(directory) == 0:
            fail(f"no CustomResourceDefinition under {directory}")
    strimzi_objects = []
    renders = {}
    for target in ["deploy/k8s", "deploy/k8s/overlays/gke-small", "deploy/k8s/overlays/production"]:
        result = subprocess.run([KUSTOMIZE, "build", str(ROOT / target)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            fail(f"kustomize build {target}: {result.stderr.strip()}")
            continue
        docs = check_rendered(target, result.stdout, schemas, strimzi_objects)
        renders[target] = docs
        check_workloads(target, docs)
        check_routes(target, docs)
        check_gke_policies(target, docs)
        if target.endswith("production"):
            kafka = next(d for d in docs if d["kind"] == "Kafka")["spec"]["kafka"]["config"]
            pool = next(d for d in docs if d["kind"] == "KafkaNodePool")["spec"]["replicas"]
            topic = next(d for d in docs if d["kind"] == "KafkaTopic" and d["metadata"]["name"] == "votes")["spec"]
            if (pool, kafka.get("default.replication.factor"), kafka.get("min.insync.replicas"), topic["replicas"]) != (3, 3, 2, 3):
                fail("production: 3 brokers, replication factor 3 and min.insync.replicas=2 expected")
    operator_pods = run_strimzi_model(strimzi_objects)
    print("== Pod Security restricted, NetworkPolicies")
    for target, docs in renders.items():
        pods = [p for p in operator_pods if p["where"].split(" of ")[-1].startswith(target + " ")]
        count = check_pod_security(target, docs, pods)
        arrows = check_network(target, docs)
        print(f"   {target}: {count} pod templates, {arrows} arrows")
    control_plane = os.environ.get("BANDVOTE_CONTROL_PLANE")
    if not control_plane:
        fail("control plane: BANDVOTE_CONTROL_PLANE (the directory of its binaries) is not set (run scripts/check-deploy)")
    elif control_plane == "skip":  # deploycheck/mutations.py, for the breaks the offline checks judge
        print("== control plane: skipped (BANDVOTE_CONTROL_PLANE=skip)")
    else:
        crd_dirs = [d for d in os.environ.get("BANDVOTE_CRD_DIRS", "").split(":") + [os.environ.get("BANDVOTE_STRIMZI_CRDS", "")] if d]
        cluster.run(str(ROOT / "scripts/deploycheck/control-plane"), control_plane, crd_dirs, renders, operator_pods,
                    lambda message: fail(f"control plane: {message}"))
    compose = check_compose()
    check_compose_sentinel()
    check_sentinel_acl()
    check_build()
    grafana_env = {}
    for docs in renders.values():
        for obj in docs:
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "grafana":
                grafana_env = {e["name"]: e.get("value", "") for e in containers_of(obj)[0].get("env", [])}
    check_dashboards(grafana_env)
    if compose:
        check_dashboards({k: str(v) for k, v in (compose["services"]["grafana"].get("environment") or {}).items()})
    if "deploy/k8s" in renders:
        check_cloudrun(renders["deploy/k8s"])
    check_guide()
    if failures:
        print(f"\n{len(failures)} problem(s) in the deployment files")
        sys.exit(1)
    print("\ndeployment files: all checks passed")


main()
