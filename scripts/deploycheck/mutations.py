"""Puts each known deployment bug (files that passed the offline checks yet a current cluster refused)
back, one at a time, in a scratch copy of the files, and shows that scripts/check_deploy.py catches
it: prints the first FAIL line for each (and the first of the control plane's, for the breaks run
against it), and exits 1 if some break went unnoticed or the unbroken copy does not pass. Not part
of CI (each break re-renders and re-runs the Strimzi model; the breaks marked `cluster` also start
the control plane, a minute or two each); run it by hand after changing a check, with the
environment check-deploy sets, which `scripts/check-deploy --mutations` does (ONLY=text runs the
breaks whose title contains it).

The other breaks run with BANDVOTE_CONTROL_PLANE=skip (the offline checks alone).
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
COPY = ["scripts", "deploy", "Dockerfile", ".dockerignore", ".gitignore", "crates/bandvote-runtime/src/metrics.rs"]

KAFKA = "deploy/k8s/base/kafka.yaml"
# (what the bug was, file, text to replace, replacement)
BREAKS = [
    ("1 Strimzi API v1beta2", KAFKA, "apiVersion: kafka.strimzi.io/v1\nkind: Kafka\n", "apiVersion: kafka.strimzi.io/v1beta2\nkind: Kafka\n"),
    ("1 Kafka 4.1.x", KAFKA, "version: 4.3.0", "version: 4.1.1"),
    ("1 ignored KRaft annotation", KAFKA, "  name: bandvote\nspec:\n  kafka:", "  name: bandvote\n  annotations:\n    strimzi.io/kraft: enabled\nspec:\n  kafka:"),
    ("1 v1beta2-only field", KAFKA, "    version: 4.3.0\n", "    version: 4.3.0\n    replicas: 1\n"),
    ("1 unpinned operator in the guide", "deploy/README.md", ' --version "$STRIMZI_VERSION"', ""),
    ("2 Kafka container without securityContext", KAFKA, "      kafkaContainer:\n        securityContext:\n          allowPrivilegeEscalation: false\n          runAsNonRoot: true\n          readOnlyRootFilesystem: true\n          capabilities: {drop: [ALL]}\n          seccompProfile: {type: RuntimeDefault}\n", ""),
    ("3 no policy for the HTTP-01 solver", "deploy/k8s/base/network-policies.yaml", "matchLabels: {acme.cert-manager.io/http01-solver: \"true\"}", "matchLabels: {acme.cert-manager.io/http01-solver: \"nobody\"}"),
    ("4 compose Kafka log off the volume", "deploy/compose/docker-compose.yml", "      KAFKA_LOG_DIRS: /var/lib/kafka/data\n", ""),
    ("5 internal LB rewrites source IPs", "deploy/cloudrun/internal-lb.yaml", "  externalTrafficPolicy: Local\n", ""),
    ("5 Kafka listener open to every namespace", KAFKA, "        networkPolicyPeers:\n          - podSelector:\n              matchExpressions:\n                - {key: app.kubernetes.io/name, operator: In, values: [grpc, wasm, consumer]}\n", ""),
    ("5 production image that does not exist", "deploy/k8s/overlays/production/kustomization.yaml", "newName: us-central1-docker.pkg.dev/my-project/bandvote/bandvote\n", "newName: bandvote\n"),
    ("5 consumer autoscaled on CPU", "deploy/k8s/base/consumer.yaml", "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject", "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: cpu}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: consumer}\n  maxReplicas: 5\n---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject"),
    ("5 replicas in the Deployment", "deploy/k8s/base/consumer.yaml", "spec:\n  selector:\n    matchLabels: {app.kubernetes.io/name: consumer}\n  template", "spec:\n  replicas: 2\n  selector:\n    matchLabels: {app.kubernetes.io/name: consumer}\n  template"),
    ("5 more consumers than partitions", "deploy/k8s/base/consumer.yaml", "maxReplicaCount: 6", "maxReplicaCount: 10"),
    ("5 no scale-down stabilisation", "deploy/k8s/base/consumer.yaml", "stabilizationWindowSeconds: 600", "stabilizationWindowSeconds: 0"),
    ("5 PDB minAvailable 1 with one replica", "deploy/k8s/base/api.yaml", "  maxUnavailable: 1\n", "  minAvailable: 1\n", "cluster"),
    ("5 .env in the build context", ".dockerignore", "**/.env\n", ""),
    ("5 Redis password in its args", "deploy/k8s/base/redis.yaml", "exec redis-server /etc/redis/redis.conf", "exec redis-server /etc/redis/redis.conf --requirepass $(REDISCLI_AUTH)"),
    ("5 Redis without maxmemory", "deploy/k8s/base/redis.conf", "maxmemory 768mb\n", ""),
    ("5 apps as MongoDB's root user", "deploy/k8s/base/api.yaml", "mongodb://bandvote:$(MONGO_PASSWORD)@mongodb:27017/bandvote?authSource=bandvote", "mongodb://root:$(MONGO_PASSWORD)@mongodb:27017/?authSource=admin"),
    ("5 Grafana downloads its plugin", "deploy/k8s/base/grafana.yaml", "          env:\n", "          env:\n            - {name: GF_INSTALL_PLUGINS, value: redis-datasource}\n"),
    ("5 Redis Service not headless", "deploy/k8s/base/redis.yaml", "  clusterIP: None\n", ""),
    ("5 production Kafka without anti-affinity", "deploy/k8s/overlays/production/kustomization.yaml", "topologyKey: kubernetes.io/hostname", "topologyKey: topology.kubernetes.io/zone-x"),
    ("5 image build without cache mounts", "Dockerfile", "--mount=type=cache,target=/src/target,sharing=locked", ""),
    ("route / exposes /metrics", "deploy/k8s/base/gateway.yaml", "        - path: {type: PathPrefix, value: /metrics}\n", ""),
    ("CRD: unknown HTTPRoute field", "deploy/k8s/base/gateway.yaml", "      backendRefs:\n        - {name: grpc, port: 3000}", "      backendRefs:\n        - {name: grpc, port: 3000, weight: 1, timeout: 5s}"),
    ("CRD: KEDA trigger metadata not a string", "deploy/k8s/base/consumer.yaml", 'threshold: "5000"', "threshold: 5000"),
    ("6 stat over strings reduces numbers only", "deploy/grafana/dashboards/contest-live.json", '"fields": "/.*/"', '"fields": ""'),
    ("32 refresh 1s missing from the time picker: no timer", "deploy/grafana/dashboards/contest-live.json", '      "1s",\n      "5s",', '      "5s",'),
    ("32 round variable sorted: the alphabetically first round, not the open one", "deploy/grafana/dashboards/contest-live.json", '"sort": 0,', '"sort": 1,'),
    ("32 votes over time reads the whole stream", "deploy/grafana/dashboards/contest-live.json", '"command": "xrange",\n          "keyName": "votes:timeline",', '"command": "xrange",\n          "keyName": "votes:timeline",\n          "start": "-",\n          "end": "+",'),
    ("6 time series without $time", "deploy/grafana/dashboards/contest-live.json", '"$time",', '"$streamId",'),
    ("6 1 s refresh under the 5 s minimum", "deploy/grafana/Dockerfile", "    GF_DASHBOARDS_MIN_REFRESH_INTERVAL=1s\n", "    GF_X=1\n"),
    ("32 production objects without a namespace (land in default)", "deploy/k8s/overlays/production/kustomization.yaml", "\nnamespace: bandvote\n", "\n", "cluster"),
    ("32 HealthCheckPolicy port without portSpecification", "deploy/k8s/base/gateway.yaml", "httpHealthCheck: {portSpecification: USE_FIXED_PORT, port: 3000,", "httpHealthCheck: {port: 3000,"),
    ("32 Kafka anti-affinity selects the entity operator too", "deploy/k8s/overlays/production/kustomization.yaml", "strimzi.io/name: bandvote-kafka}", "strimzi.io/kind: Kafka}", "cluster"),
    ("32 one consumer at least", "deploy/k8s/base/consumer.yaml", "minReplicaCount: 2", "minReplicaCount: 1"),
    ("32 gateways trust no proxy", "deploy/k8s/base/api.yaml", "            - name: BANDVOTE_TRUSTED_PROXIES\n              valueFrom: {configMapKeyRef: {name: load-balancer, key: trusted-proxies}}\n", ""),
    ("32 Grafana reaches the Sentinels", "deploy/k8s/components/redis-sentinel/kustomization.yaml", "values: [consumer, api, grpc, wasm]}\n          ports:\n            - {port: 26379}", "values: [consumer, api, grpc, wasm, grafana]}\n          ports:\n            - {port: 26379}"),
    ("32 compose .env not ignored by git", ".gitignore", "/deploy/compose/.env\n", ""),
    ("compose: an obsolete `version:` (Compose v2 warns)", "deploy/compose/docker-compose.yml", "\nx-bandvote: &bandvote\n", "\nversion: \"3.8\"\nx-bandvote: &bandvote\n"),
    ("compose: a misspelt healthcheck key (the spec's schema)", "deploy/compose/docker-compose.yml", "      timeout: 10s\n      retries: 30\n", "      timeout: 10s\n      retires: 30\n"),
    ("compose: a Sentinel on the network of a service that does not exist", "deploy/compose/redis-sentinel.yml", 'network_mode: "service:redis-2"', 'network_mode: "service:redis-3"'),
    ("32 Kafka 4.4.0, the hand list bumped with it (Strimzi 1.2.0 runs no 4.4.x)", [
        ("deploy/versions.env", "KAFKA_VERSION=4.3.0", "KAFKA_VERSION=4.4.0"),
        ("deploy/versions.env", 'STRIMZI_KAFKA_LINES="4.2 4.3"', 'STRIMZI_KAFKA_LINES="4.2 4.3 4.4"'),
        (KAFKA, "version: 4.3.0", "version: 4.4.0"),
        ("deploy/compose/docker-compose.yml", "apache/kafka:4.3.0", "apache/kafka:4.4.0")]),
    ("32 metadataVersion newer than the Kafka", KAFKA, "    version: 4.3.0\n", "    version: 4.3.0\n    metadataVersion: 4.4-IV0\n"),
    ("32 HTTPS listener's Secret only once the ACME order completes", "deploy/k8s/components/tls/issuer.yaml", '  annotations:\n    cert-manager.io/issue-temporary-certificate: "true"\n', "", "cluster"),
    ("32 Sentinel's default user may reconfigure it", "deploy/k8s/components/redis-sentinel/scripts/sentinel.sh", "user default on nopass resetchannels -@all +ping", "user default on nopass resetchannels -@all +@all +ping"),
    ("32 Sentinel's default user may not ask ROLE: no bandvote client connects", "deploy/k8s/components/redis-sentinel/scripts/sentinel.sh", "-@all +ping +role +sentinel", "-@all +ping +sentinel"),
    ("the guide's Secret without a key the pods read", "deploy/README.md", ' \\\n    --from-literal=ingest-secret="$(openssl rand -hex 24)"', "", "cluster"),
]


def cluster_line(lines):
    return next((l for l in lines if l.startswith("FAIL control plane:")), None)


def run_check(args, mutate=None, cluster=False):
    """Runs check_deploy.py on a scratch copy, broken by mutate(scratch) first; returns
    (exit code, FAIL lines), or None when mutate found nothing to break."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        for item in COPY:
            source, target = ROOT / item, scratch / item
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
        if mutate and not mutate(scratch):
            return None
        env = dict(os.environ)
        if not cluster:
            env["BANDVOTE_CONTROL_PLANE"] = "skip"
        result = subprocess.run([sys.executable, str(scratch / "scripts/check_deploy.py"), *args],
                                capture_output=True, text=True, check=False, env=env)
        return result.returncode, [l.strip() for l in result.stdout.splitlines() if l.strip().startswith("FAIL")]


def main():
    args = sys.argv[1:4]
    missed = 0
    only = os.environ.get("ONLY", "")
    selected = [b for b in BREAKS if only in b[0]]
    cluster = any("cluster" in b for b in selected)
    code, fails = run_check(args, cluster=cluster)
    if code != 0:
        print(f"[unbroken copy] does not pass: {fails[:3]}")
        sys.exit(1)
    print(f"[unbroken copy] passes{' (with the control plane)' if cluster else ''}")
    for title, *rest in selected:
        # (title, file, old, new, flags...) or (title, [(file, old, new), ...], flags...)
        edits, flags = ([tuple(rest[:3])], rest[3:]) if isinstance(rest[0], str) else (rest[0], rest[1:])
        path = ", ".join(e[0] for e in edits)

        def mutate(scratch, edits=edits):
            for path, old, new in edits:
                if "grafana" in path and path.endswith(".json"):  # the k8s copies must stay equal
                    extra = scratch / "deploy/k8s/base/grafana" / pathlib.Path(path).name
                else:
                    extra = None
                for file in filter(None, [scratch / path, extra]):
                    text = file.read_text()
                    if old not in text:
                        return False
                    file.write_text(text.replace(old, new, 1))
            return True

        outcome = run_check(args, mutate, cluster="cluster" in flags)
        if outcome is None:
            print(f"[{title}] the text to break is not in {path} any more; update mutations.py")
            missed += 1
            continue
        code, fails = outcome
        if code == 0 or not fails:
            print(f"[{title}] NOT CAUGHT")
            missed += 1
            continue
        print(f"[{title}] {fails[0]}")
        if "cluster" in flags:
            line = cluster_line(fails)
            if line is None:
                print("    NOT CAUGHT by the control plane")
                missed += 1
            elif line != fails[0]:
                print(f"    {line}")
    sys.exit(1 if missed else 0)


main()
