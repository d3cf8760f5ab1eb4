"""Each render applied to a real Kubernetes control plane (scripts/deploycheck/control-plane: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kwok's fake nodes; no container runs).

For each render, on a cluster reset to empty (no namespace bandvote, no nodes):
1. the CRDs as their projects ship them are installed once (Gateway API, cert-manager and KEDA from
   their Go modules, Strimzi's generated from its API model by its own crd-generator);
2. the namespace bandvote is created enforcing the restricted Pod Security Standard, with the
   Secret bandvote-secrets with the keys the guide (deploy/README.md) creates it with, and fake
   nodes shaped like the render's node pool (NODE_POOLS);
3. the render is applied server-side as `kubectl apply -k` would (an object without a namespace goes
   to `default`): every object must be accepted by the API server (OpenAPI and CRD schemas, CEL
   rules, admission);
4. nothing may be left in `default`;
5. cert-manager's first step is played by hand: a Certificate annotated
   cert-manager.io/issue-temporary-certificate gets its Secret at once (cert-manager's issuing
   controller writes a self-signed certificate there while the ACME order runs); every Secret a
   Gateway listener's certificateRefs names must then exist: one that only an ACME order would
   create leaves the listener unresolved, and GKE may refuse the whole Gateway, so the HTTP-01
   challenge on its plain-HTTP listener is never served and the Secret never comes;
   KEDA's part is played by hand too (each ScaledObject's target scaled to its minReplicaCount); the pods
   the Strimzi operator would make (a Kafka node per node-pool replica, the entity operator) are
   created with the labels Strimzi gives them (Labels.generateDefaultLabels: strimzi.io/cluster,
   strimzi.io/kind, strimzi.io/name), the security contexts its security provider computes
   (StrimziCheck.java) and the affinity of the resource's templates; each PersistentVolumeClaim
   gets a volume;
6. every Deployment and StatefulSet rolls out and every pod is scheduled and Ready within a time
   limit: Pod Security admission, the scheduler's resource fit and (anti-)affinity are real; every
   ConfigMap and Secret a pod mounts or reads exists in its namespace (kwok does not look; a
   kubelet would wait for it forever);
7. GKE's default node upgrade: a surge node added, then each node in turn drained with `kubectl
   drain` (and uncordoned): the evictions go through the real PodDisruptionBudgets, each drain must
   finish within a minute, and everything must be Ready again after it. Also printed: the pods'
   requests against the nodes' allocatable, and whether they would still fit with one node lost.

What this does not do: run any container (probes, commands, images, network policies, the operators
and their controllers are not exercised; cert-manager's and KEDA's first steps are played as above),
or know GKE's own CRDs (networking.gke.io: those objects
are left out and checked in check_deploy.py).
"""

import json
import os
import pathlib
import re
import subprocess
import tempfile
import time

import yaml

NAMESPACE = "bandvote"
# The machines of the guide's cluster (`gcloud container clusters create ... --num-nodes 3
# --machine-type e2-standard-2`, deploy/README.md), per render. Allocatable is GKE's for that
# machine type (CPU 1930m; memory 8 GB less GKE's reservation and eviction threshold) less an
# estimate of what GKE's own DaemonSets request on each node (Dataplane V2, logging, metrics, the
# disk driver): about 300m CPU and 500Mi.
MACHINES = {"e2-standard-2": {"cpu": "1630m", "memory": "5400Mi", "pods": "110"}}
NODE_POOLS = {
    "deploy/k8s": (3, "e2-standard-2"),
    "deploy/k8s/overlays/gke-small": (3, "e2-standard-2"),
    "deploy/k8s/overlays/production": (3, "e2-standard-2"),
}
GUIDE = pathlib.Path(__file__).resolve().parents[2] / "deploy/README.md"
ROLLOUT_SECONDS = 90


class ControlPlane:
    def __init__(self, script, bin_dir):
        self.script, self.bin = script, pathlib.Path(bin_dir)
        self.state = pathlib.Path(tempfile.mkdtemp(prefix="bandvote-control-plane-"))
        self.crds_installed = False

    def __enter__(self):
        started = time.monotonic()
        if subprocess.run([self.script, "up", str(self.state)], check=False).returncode != 0:
            logs = "\n".join(f"{log.name}: {' '.join(log.read_text().strip().splitlines()[-3:])[-500:]}"
                              for log in sorted((self.state / "logs").glob("*.log")))
            self.__exit__()
            raise SystemExit(f"control plane: did not start; the last lines of its logs:\n{logs}")
        print(f"   control plane up in {time.monotonic() - started:.1f} s ({self.state})")
        return self

    def __exit__(self, *_):
        subprocess.run([self.script, "down", str(self.state)], check=False)
        if os.environ.get("BANDVOTE_KEEP_CONTROL_PLANE_STATE") is None:
            subprocess.run(["rm", "-rf", str(self.state)], check=False)

    def kubectl(self, *args, input=None, check=False):
        return subprocess.run([str(self.bin / "kubectl"), "--kubeconfig", str(self.state / "kubeconfig"), *args],
                              input=input, capture_output=True, text=True, check=check)

    def get(self, *args):
        result = self.kubectl("get", *args, "-o", "json")
        return json.loads(result.stdout)["items"] if result.returncode == 0 else []


def crd_documents(directory):
    for path in sorted(pathlib.Path(directory).rglob("*.yaml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                yield doc


def install_crds(cp, directories, fail):
    docs = [d for directory in directories for d in crd_documents(directory)]
    result = cp.kubectl("apply", "--server-side", "--field-manager", "check-deploy", "-f", "-",
                        input=yaml.safe_dump_all(docs))
    if result.returncode != 0:
        fail(f"control plane: installing {len(docs)} CRDs: {result.stderr.strip()[-1500:]}")
        return
    cp.kubectl("wait", "--for", "condition=Established", "crd", "--all", "--timeout", "60s")
    print(f"   {len(docs)} CRDs installed")


def reset(cp):
    """Back to an empty cluster: no namespace bandvote, nothing of ours in default, no nodes."""
    cp.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
    for _ in range(240):
        if cp.kubectl("get", "namespace", NAMESPACE).returncode != 0:
            break
        # Pods on fake nodes that are gone are never confirmed deleted: force them.
        cp.kubectl("delete", "pods", "--all", "-n", NAMESPACE, "--force", "--grace-period=0")
        time.sleep(0.5)
    for kind in default_kinds(cp):
        cp.kubectl("delete", kind, "-n", "default", "-l", "app.kubernetes.io/part-of=bandvote", "--ignore-not-found")
    cp.kubectl("delete", "nodes", "-l", "type=kwok", "--ignore-not-found")
    cp.kubectl("delete", "persistentvolumes", "-l", "bandvote-check=fake", "--ignore-not-found", "--wait=false")


_kinds = None


def default_kinds(cp):
    global _kinds
    if _kinds is None:
        result = cp.kubectl("api-resources", "--namespaced", "--verbs", "list", "-o", "name")
        _kinds = [k for k in result.stdout.split() if k not in ("events", "events.events.k8s.io")]
    return _kinds


def make_nodes(cp, count, machine, only=None):
    allocatable = MACHINES[machine]
    nodes = []
    for i in (range(count) if only is None else only):
        name = f"{machine}-{i}"
        nodes.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": machine,
                                    "topology.kubernetes.io/zone": "us-central1-a", "topology.kubernetes.io/region": "us-central1"}},
            "spec": {},
            "status": {"allocatable": allocatable, "capacity": allocatable,
                       "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"}},
        })
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(nodes), check=True)
    cp.kubectl("wait", "--for", "condition=Ready", "nodes", "-l", "type=kwok", "--timeout", "60s")


def storage_classes(cp):
    classes = [{"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": str(name == "standard").lower()}},
                "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}
               for name in ("standard", "standard-rwo")]
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(classes), check=True)


def bind_claims(cp):
    """A pre-bound volume for every claim that has none (GKE's disk driver, played by hand)."""
    volumes = []
    for claim in cp.get("persistentvolumeclaims", "-n", NAMESPACE):
        if claim["status"].get("phase") == "Bound" or claim["spec"].get("volumeName"):
            continue
        name = f"fake-{claim['metadata']['uid']}"
        volumes.append({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"bandvote-check": "fake"}},
            "spec": {"capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                     "accessModes": claim["spec"]["accessModes"], "storageClassName": claim["spec"].get("storageClassName") or "",
                     "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": f"/fake/{name}"},
                     "claimRef": {"namespace": NAMESPACE, "name": claim["metadata"]["name"], "uid": claim["metadata"]["uid"]}},
        })
    if volumes:
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(volumes))


def strimzi_pods(docs, operator_pods, render):
    """The pods the Strimzi operator would create for the render's Kafka cluster."""
    kafka = next((d for d in docs if d["kind"] == "Kafka"), None)
    if not kafka:
        return []
    cluster = kafka["metadata"]["name"]
    pods = []
    base = {"strimzi.io/cluster": cluster, "strimzi.io/kind": "Kafka",
            "app.kubernetes.io/managed-by": "strimzi-cluster-operator", "app.kubernetes.io/part-of": f"strimzi-{cluster}"}
    for pool in (d for d in docs if d["kind"] == "KafkaNodePool"):
        pool_name = pool["metadata"]["name"]
        computed = next((p["spec"] for p in operator_pods
                         if p["where"] == f"Kafka node pod of {render} KafkaNodePool/{pool_name}"), {"containers": [{"name": "kafka"}]})
        template = (pool["spec"].get("template") or {}).get("pod") or (kafka["spec"]["kafka"].get("template") or {}).get("pod") or {}
        for i in range(pool["spec"]["replicas"]):
            labels = {**base, "strimzi.io/name": f"{cluster}-kafka", "strimzi.io/pool-name": pool_name,
                      "strimzi.io/component-type": "kafka", "strimzi.io/controller": "strimzipodset",
                      "strimzi.io/controller-name": f"{cluster}-{pool_name}", "strimzi.io/pod-name": f"{cluster}-{pool_name}-{i}"}
            pods.append(fake_pod(f"{cluster}-{pool_name}-{i}", labels, computed, template, pool["spec"].get("resources")))
    if kafka["spec"].get("entityOperator"):
        computed = next((p["spec"] for p in operator_pods if p["where"] == f"entity operator pod of {render} Kafka/{cluster}"),
                        {"containers": [{"name": "topic-operator"}]})
        template = (kafka["spec"]["entityOperator"].get("template") or {}).get("pod") or {}
        labels = {**base, "strimzi.io/name": f"{cluster}-entity-operator", "strimzi.io/component-type": "entity-operator"}
        pods.append(fake_pod(f"{cluster}-entity-operator", labels, computed, template, None))
    return pods


def fake_pod(name, labels, computed, template, resources):
    spec = {"securityContext": computed.get("securityContext", {}), "automountServiceAccountToken": False,
            "containers": [{**c, "image": "strimzi-operator-made", **({"resources": resources} if resources else {})}
                           for c in computed["containers"]]}
    if "hostUsers" in computed:
        spec["hostUsers"] = computed["hostUsers"]
    for key in ("affinity", "tolerations", "topologySpreadConstraints", "priorityClassName"):
        if key in template:
            spec[key] = template[key]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels}, "spec": spec}


def check_render(cp, render, docs, operator_pods, fail):
    started = time.monotonic()
    reset(cp)
    count, machine = NODE_POOLS[render]
    make_nodes(cp, count, machine)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace), check=True)
    # The Secret with the keys the guide's `kubectl create secret generic bandvote-secrets` gives it:
    # a key the manifests read and the guide leaves out stops the pods (missing_references).
    guide = GUIDE.read_text()
    command = guide[guide.index("create secret generic bandvote-secrets"):]
    command = command[:command.index("\n\n") if "\n\n" in command else len(command)].split("\nkubectl ", 1)[0]
    keys = re.findall(r"--from-literal=([\w.-]+)=", command)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bandvote-secrets", "namespace": NAMESPACE},
              "stringData": {k: "x" * 32 for k in keys}}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret), check=True)
    # What `kubectl apply -k` sends, server-side (GKE's own kinds are unknown to this API server).
    applied = [d for d in docs if not d["apiVersion"].startswith("networking.gke.io/")]
    # (The kubeconfig's context names no namespace: an object without one goes to `default`.)
    result = cp.kubectl("apply", "--server-side", "--field-manager", "check-deploy", "--force-conflicts",
                        "-f", "-", input=yaml.safe_dump_all(applied))
    for line in result.stderr.splitlines():
        if line.strip() and not line.startswith("Warning:"):
            fail(f"{render} API server: {line.strip()}")
    warnings = [l for l in result.stderr.splitlines() if l.startswith("Warning:")]
    for line in warnings:
        # Pod Security warns on templates that the namespace's policy would refuse pods of.
        if "violate PodSecurity" in line:
            fail(f"{render} API server: {line.strip()}")
    # Nothing in default: every namespaced kind listed, less what the cluster puts there itself.
    leftovers = []
    for kind in default_kinds(cp):
        for item in cp.get(kind, "-n", "default"):
            name = item["metadata"]["name"]
            if (kind, name) in (("serviceaccounts", "default"), ("configmaps", "kube-root-ca.crt"), ("services", "kubernetes"),
                                ("endpoints", "kubernetes"), ("endpointslices.discovery.k8s.io", "kubernetes")):
                continue
            leftovers.append(f"{item['kind']}/{name}")
    if leftovers:
        fail(f"{render}: `kubectl apply -k` leaves {', '.join(sorted(leftovers))} in the namespace default")
    check_gateway_certificates(cp, render, docs, fail)
    # KEDA: the autoscaler keeps minReplicaCount pods.
    for scaled in (d for d in docs if d["kind"] == "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        cp.kubectl("scale", "-n", NAMESPACE, f"deployment/{target}", f"--replicas={scaled['spec'].get('minReplicaCount', 1)}")
    # Strimzi's pods.
    made = strimzi_pods(docs, operator_pods, render)
    if made:
        result = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(made))
        for line in result.stderr.splitlines():
            if line.strip() and not line.startswith("Warning:"):
                fail(f"{render} API server, the Strimzi operator's pods: {line.strip()}")
    # Every workload rolled out, every pod scheduled and Ready.
    workloads = [(d["kind"], d["metadata"]["name"]) for d in applied if d["kind"] in ("Deployment", "StatefulSet")]
    deadline = time.monotonic() + ROLLOUT_SECONDS
    while True:
        bind_claims(cp)
        pending = not_ready(cp, workloads, [p["metadata"]["name"] for p in made])
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(2)
    for problem in pending:
        fail(f"{render} on {count} × {machine} (fake nodes): {problem}")
    pods = cp.get("pods", "-n", NAMESPACE)
    for problem in missing_references(cp, pods):
        fail(f"{render}: {problem}")
    spread = {}
    for pod in pods:
        spread.setdefault(pod["spec"].get("nodeName", "(none)"), []).append(pod["metadata"]["name"])
    print(f"   {render}: {headroom(cp, count, machine)}")
    drained = drain(cp, render, workloads, made, fail) if not pending else "not drained"
    print(f"   {render}: {len(applied)} objects applied, {len(pods)} pods on {count} × {machine}"
          f" ({', '.join(f'{n}: {len(p)}' for n, p in sorted(spread.items()))}), {drained}, in {time.monotonic() - started:.1f} s")


TEMPORARY_CERTIFICATE = "cert-manager.io/issue-temporary-certificate"


def check_gateway_certificates(cp, render, docs, fail):
    """cert-manager's temporary certificates written, then every Gateway listener's Secret present."""
    temporary = [{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                  "metadata": {"name": c["spec"]["secretName"], "namespace": NAMESPACE,
                               "annotations": {"cert-manager.io/certificate-name": c["metadata"]["name"]}},
                  "stringData": {"tls.crt": "temporary", "tls.key": "temporary"}}
                 for c in docs if c["kind"] == "Certificate" and c["apiVersion"].startswith("cert-manager.io/")
                 and (c["metadata"].get("annotations") or {}).get(TEMPORARY_CERTIFICATE) == "true"]
    if temporary:
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(temporary), check=True)
    secrets = {s["metadata"]["name"] for s in cp.get("secrets", "-n", NAMESPACE)}
    issued_later = {c["spec"]["secretName"]: c["metadata"]["name"] for c in docs if c["kind"] == "Certificate"}
    for gateway in cp.get("gateways.gateway.networking.k8s.io", "-n", NAMESPACE):
        for listener in gateway["spec"]["listeners"]:
            for ref in (listener.get("tls") or {}).get("certificateRefs") or []:
                if ref.get("kind", "Secret") != "Secret" or ref.get("group", "") != "" or ref.get("namespace", NAMESPACE) != NAMESPACE:
                    continue
                if ref["name"] in secrets:
                    continue
                why = (f"Certificate/{issued_later[ref['name']]} creates it only once its order completes (no {TEMPORARY_CERTIFICATE}: \"true\")"
                       if ref["name"] in issued_later else "no object of the render creates it and no Certificate issues it")
                fail(f"{render} Gateway/{gateway['metadata']['name']} listener {listener['name']}: Secret {ref['name']} does not exist"
                     f" when the Gateway is applied ({why}); GKE may refuse the whole Gateway, and the HTTP-01 challenge"
                     f" on its plain-HTTP listener is then never served")


def quantity(value):
    value = str(value)
    for suffix, factor in (("m", 1e-3), ("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30)):
        if value.endswith(suffix):
            return float(value[:-len(suffix)]) * factor
    return float(value)


def headroom(cp, count, machine):
    """The pods' requests against the nodes' allocatable (informational: a node lost without a
    replacement leaves pods Pending when they no longer fit)."""
    cpu = memory = 0.0
    for pod in cp.get("pods", "-n", NAMESPACE):
        for container in pod["spec"]["containers"]:
            requests = container.get("resources", {}).get("requests", {})
            cpu += quantity(requests.get("cpu", 0))
            memory += quantity(requests.get("memory", 0))
    node_cpu, node_memory = quantity(MACHINES[machine]["cpu"]), quantity(MACHINES[machine]["memory"])
    fits = cpu <= (count - 1) * node_cpu and memory <= (count - 1) * node_memory
    return (f"requests {cpu:.2f} CPU, {memory / 2**30:.1f} GiB of {count * node_cpu:.2f} CPU, {count * node_memory / 2**30:.1f} GiB;"
            f" with a node lost they {'still fit' if fits else 'no longer fit (pods would stay Pending until it is back)'}")


def missing_references(cp, pods):
    """What a kubelet would wait for forever: a ConfigMap or Secret a pod mounts or reads a key of
    that does not exist in the pod's namespace (kwok starts pods without looking)."""
    have = {("ConfigMap", c["metadata"]["name"]): c.get("data", {}) for c in cp.get("configmaps", "-n", NAMESPACE)}
    have.update({("Secret", c["metadata"]["name"]): c.get("data", {}) for c in cp.get("secrets", "-n", NAMESPACE)})
    problems = set()
    for pod in pods:
        where = f"pod {pod['metadata']['name']}"
        for volume in pod["spec"].get("volumes", []):
            for kind, key, name_key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
                ref = volume.get(key)
                if ref and not ref.get("optional") and (kind, ref.get(name_key)) not in have:
                    problems.add(f"{where}: volume {volume['name']} needs {kind} {ref.get(name_key)}, which is not in {NAMESPACE}; the kubelet would never start it")
        for container in pod["spec"].get("containers", []) + pod["spec"].get("initContainers", []):
            for env in container.get("env", []):
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = (env.get("valueFrom") or {}).get(key)
                    if ref and not ref.get("optional") and ref["key"] not in have.get((kind, ref["name"]), {}):
                        problems.add(f"{where} container {container['name']}: {env['name']} needs key {ref['key']} of {kind} {ref['name']} in {NAMESPACE}; the kubelet would never start it")
    return sorted(problems)


def drain(cp, render, workloads, made, fail):
    """Drains each node in turn as GKE's default node upgrade does (a surge node added first, then
    each node drained: every eviction through the PodDisruptionBudgets), uncordons it and waits for
    everything to be Ready again."""
    nodes = sorted(n["metadata"]["name"] for n in cp.get("nodes", "-l", "type=kwok"))
    count, machine = len(nodes), cp.get("nodes", "-l", "type=kwok")[0]["metadata"]["labels"]["node.kubernetes.io/instance-type"]
    make_nodes(cp, count + 1, machine, only=[count])
    started = time.monotonic()
    for node in nodes:
        result = cp.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=60s")
        cp.kubectl("uncordon", node)
        if result.returncode != 0:
            tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            fail(f"{render}: draining {node} did not finish within 60 s under the PodDisruptionBudgets: {tail[-600:]}")
            return f"drain of {node} blocked"
        # Strimzi would recreate its pods; the check recreates the ones the drain deleted.
        if made:
            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(made))
        deadline = time.monotonic() + 60
        while (pending := not_ready(cp, workloads, [p["metadata"]["name"] for p in made])) and time.monotonic() < deadline:
            bind_claims(cp)
            time.sleep(1)
        if pending:
            fail(f"{render}: after draining {node} and uncordoning it: {pending[0]}")
            return f"not Ready again after draining {node}"
    return f"{len(nodes)} nodes drained one by one in {time.monotonic() - started:.1f} s"


def not_ready(cp, workloads, made_pods):
    problems = []
    deployments = {d["metadata"]["name"]: d for d in cp.get("deployments", "-n", NAMESPACE)}
    statefulsets = {d["metadata"]["name"]: d for d in cp.get("statefulsets", "-n", NAMESPACE)}
    pods = cp.get("pods", "-n", NAMESPACE)
    events = cp.get("events", "-n", NAMESPACE)
    for kind, name in workloads:
        obj = (deployments if kind == "Deployment" else statefulsets).get(name)
        if obj is None:
            problems.append(f"{kind}/{name} does not exist")
            continue
        want, ready = obj["spec"].get("replicas", 1), obj["status"].get("readyReplicas", 0)
        if ready < want:
            why = workload_why(kind, name, pods, events)
            problems.append(f"{kind}/{name}: {ready} of {want} pods Ready{why}")
    for name in made_pods:
        pod = next((p for p in pods if p["metadata"]["name"] == name), None)
        if pod is None:
            problems.append(f"Strimzi's pod {name} was not created")
        elif not pod_ready(pod):
            problems.append(f"Strimzi's pod {name} is not Ready{pod_why(pod)}")
    return problems


def pod_ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def pod_why(pod):
    for condition in pod["status"].get("conditions", []):
        if condition["type"] == "PodScheduled" and condition["status"] != "True":
            return f" (unschedulable: {condition.get('message', condition.get('reason'))})"
    return f" (phase {pod['status'].get('phase')})"


def workload_why(kind, name, pods, events):
    """The scheduler's or the controllers' reason: a pending pod's condition, else a FailedCreate
    event (Pod Security admission refusing the pods)."""
    for pod in pods:
        owners = pod["metadata"].get("ownerReferences", [])
        owner_names = {o["name"] for o in owners}
        if any(n == name or n.startswith(name + "-") for n in owner_names) and not pod_ready(pod):
            return f"; pod {pod['metadata']['name']}{pod_why(pod)}"
    for event in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "", reverse=True):
        involved = event.get("involvedObject", {}).get("name", "")
        if event.get("reason") == "FailedCreate" and (involved == name or involved.startswith(name + "-")):
            return f"; {event['message'][:400]}"
    return ""


def run(script, bin_dir, crd_dirs, renders, operator_pods, fail):
    print("== A real control plane (kube-apiserver, controller manager, scheduler, kwok's fake nodes)")
    started = time.monotonic()
    with ControlPlane(script, bin_dir) as cp:
        install_crds(cp, crd_dirs, fail)
        storage_classes(cp)
        for render, docs in renders.items():
            pods = [p for p in operator_pods if p["where"].split(" of ")[-1].startswith(render + " ")]
            check_render(cp, render, docs, pods, fail)
    print(f"   control plane checks: {time.monotonic() - started:.0f} s")
