"""The "restricted" Pod Security Standard (Kubernetes' pod-security admission, levels baseline and
restricted, as of Kubernetes 1.33), applied to a pod spec: what the API server of a namespace
labelled pod-security.kubernetes.io/enforce=restricted would refuse.

violations(pod_spec) -> list of strings, empty when the pod is admitted.
"""

# Volume types the restricted level allows (everything else, hostPath first, is refused).
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
# Sysctls the baseline level calls safe.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def violations(spec):
    found = []
    pod_sc = spec.get("securityContext") or {}
    containers = [("container", c) for c in spec.get("containers", [])]
    containers += [("initContainer", c) for c in spec.get("initContainers", [])]
    containers += [("ephemeralContainer", c) for c in spec.get("ephemeralContainers", [])]

    # Baseline: host namespaces, host paths and ports, privileged, capabilities, sysctls, proc mount.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(f"{field}: true")
    for volume in spec.get("volumes", []):
        kind = next((k for k in volume if k != "name"), None)
        if kind not in ALLOWED_VOLUMES:
            found.append(f"volume {volume.get('name')}: type {kind} is not allowed")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl.get('name')} is not safe")
    if pod_sc.get("seLinuxOptions", {}).get("user") or pod_sc.get("seLinuxOptions", {}).get("role"):
        found.append("pod seLinuxOptions user/role set")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        found.append("pod windowsOptions.hostProcess")

    # Restricted, pod level settings that each container may also carry (the container's wins).
    pod_non_root = pod_sc.get("runAsNonRoot")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_OK:
        found.append(f"pod seccompProfile {pod_seccomp}")
    if pod_sc.get("runAsUser") == 0:
        found.append("pod runAsUser: 0")
    if pod_non_root is False:
        found.append("pod runAsNonRoot: false")

    for kind, c in containers:
        where = f"{kind} {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{where}: privileged")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{where}: hostPort {port['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{where}: procMount {sc['procMount']}")
        if (sc.get("seLinuxOptions") or {}).get("user") or (sc.get("seLinuxOptions") or {}).get("role"):
            found.append(f"{where}: seLinuxOptions user/role set")
        caps = sc.get("capabilities") or {}
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            found.append(f"{where}: adds capabilities {sorted(added)}")
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{where}: must drop ALL capabilities (securityContext.capabilities.drop)")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation must be false")
        non_root = sc.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            found.append(f"{where}: runAsNonRoot must be true (on the container or the pod)")
        if sc.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser: 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in SECCOMP_OK:
            found.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost (on the container or the pod), is {seccomp}")
    return found


def pod_spec_of(obj):
    """The pod spec a workload object creates, or None for objects that create no pods."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return spec.get("template", {}).get("spec")
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    return None
