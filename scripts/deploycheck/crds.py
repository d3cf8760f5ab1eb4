"""Custom resources checked against the CustomResourceDefinitions their projects publish (the YAML
files in the Go modules of Gateway API, cert-manager and KEDA, at the versions of
deploy/versions.env), the way the API server checks them with kubectl's strict field validation:
the version's openAPIV3Schema, with every property a schema does not name refused (unless the
schema keeps unknown fields, x-kubernetes-preserve-unknown-fields). CEL rules
(x-kubernetes-validations) are not evaluated here: only the API server runs them.
"""

import copy
import pathlib

import jsonschema
import yaml


def _structural(schema):
    """The CRD's schema as a JSON Schema that refuses unknown fields and knows int-or-string."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        for key in [k for k in node if k.startswith("x-kubernetes-")]:
            node.pop(key)
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node and not preserve:
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in (node.get(key) or {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            walk(node.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key) or []:
                walk(child)

    walk(schema)
    # metadata is the API server's ObjectMeta, not the CRD's to describe.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


class Schemas:
    def __init__(self):
        self.by_kind = {}  # (group/version, kind) -> validator

    def load_dir(self, directory):
        """Loads every CustomResourceDefinition of the YAML files under a directory."""
        count = 0
        for path in sorted(pathlib.Path(directory).rglob("*.yaml")):
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError:
                continue  # Helm templates and other non-YAML
            for doc in docs:
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec.get("versions", []):
                    if not version.get("served", True) or "schema" not in version:
                        continue
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schema = _structural(version["schema"]["openAPIV3Schema"])
                    self.by_kind[key] = jsonschema.Draft7Validator(schema)
                    count += 1
        return count

    def knows(self, obj):
        return (obj.get("apiVersion"), obj.get("kind")) in self.by_kind

    def groups(self):
        return {api.split("/")[0] for api, _ in self.by_kind}

    def errors(self, obj):
        validator = self.by_kind[(obj["apiVersion"], obj["kind"])]
        found = []
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in error.absolute_path) or "."
            found.append(f"{error.message} at {where}")
        return found
