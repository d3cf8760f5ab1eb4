"""A small NetworkPolicy evaluator: "can A reach B on port P?" under a set of networking.k8s.io/v1
NetworkPolicies, with the semantics of the Kubernetes API documentation:

- a pod selected by no policy of a direction is open in that direction; once one policy of that
  direction selects it, only what some rule of some selecting policy allows gets through (policies
  add up, they never subtract);
- a rule without `from`/`to` matches every peer, without `ports` every port; a peer is a podSelector
  (in the policy's namespace, or in the namespaces its namespaceSelector picks), a namespaceSelector
  alone (every pod there), or an ipBlock (an address outside the pod network: ipBlock peers never
  match pods here, as on GKE's Dataplane V2 where pod traffic is matched by labels);
- ports by number or by the destination container's port name, TCP unless a protocol is given,
  with endPort ranges.

Endpoints are dicts: {"name", "namespace", "labels", "ip", "ports": {name: number}}; a source
outside the cluster has no namespace, only an ip.
"""

import ipaddress


def selector_matches(selector, labels):
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policy_types(policy):
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return spec["policyTypes"]
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def peer_matches(peer, policy_ns, other, namespaces):
    if "ipBlock" in peer:
        if other.get("namespace") is not None or not other.get("ip"):
            return False
        address = ipaddress.ip_address(other["ip"])
        block = peer["ipBlock"]
        if address not in ipaddress.ip_network(block["cidr"], strict=False):
            return False
        return not any(address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])
    if other.get("namespace") is None:
        return False  # pod and namespace selectors match pods only
    if "namespaceSelector" in peer:
        ns_labels = namespaces.get(other["namespace"], {"kubernetes.io/metadata.name": other["namespace"]})
        if not selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif other["namespace"] != policy_ns:
        return False
    if "podSelector" in peer:
        return selector_matches(peer["podSelector"], other["labels"])
    return True


def port_matches(rule_ports, port, protocol, destination):
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        number = p.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            number = destination.get("ports", {}).get(number)
            if number is None:
                continue
        if number == port or (p.get("endPort") and number <= port <= p["endPort"]):
            return True
    return False


def allowed_one_way(policies, direction, subject, other, port, protocol, destination, namespaces):
    """Whether the policies selecting `subject` in `direction` let `other` through."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p for p in policies
        if p["metadata"].get("namespace") == subject.get("namespace")
        and direction in policy_types(p)
        and selector_matches(p["spec"].get("podSelector", {}), subject["labels"])
    ]
    if not selecting:
        return True, "no policy selects it"
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers is not None and peers != [] and not any(peer_matches(peer, policy["metadata"]["namespace"], other, namespaces) for peer in peers):
                continue
            if port_matches(rule.get("ports"), port, protocol, destination):
                return True, f"NetworkPolicy/{policy['metadata']['name']}"
    return False, "denied by " + ", ".join(p["metadata"]["name"] for p in selecting)


def can_reach(policies, source, destination, port, protocol="TCP", namespaces=None):
    """(allowed, reason): whether `source` can open a connection to `destination` on `port`."""
    namespaces = namespaces or {}
    if source.get("namespace") is not None:
        ok, why = allowed_one_way(policies, "Egress", source, destination, port, protocol, destination, namespaces)
        if not ok:
            return False, f"egress {why}"
    if destination.get("namespace") is None:
        return True, "outside the cluster"
    return allowed_one_way(policies, "Ingress", destination, source, port, protocol, destination, namespaces)
