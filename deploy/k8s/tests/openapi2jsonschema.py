#!/usr/bin/env python3
"""Turns Kubernetes OpenAPI v2 definitions (from schemadump) into the standalone, strict JSON
schemas kubeconform reads: one file per kind, `<kind>[-<group>]-<version>.json`, every $ref
inlined, `additionalProperties: false` on objects with declared properties (strict: unknown
fields are errors), int-or-string and quantities accept numbers and strings.

Same approach as kubeconform's own openapi2jsonschema.py. Kinds introduced after the embedded
Kubernetes version (1.21.2) have no schema, except autoscaling/v2 HorizontalPodAutoscaler, which
is derived from autoscaling/v2beta2 (same fields; the group was promoted in 1.23) and is
reported as derived.

usage: openapi2jsonschema.py DEFS.json OUTDIR
"""
import copy
import json
import os
import sys

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}


def main():
    src, out = sys.argv[1], sys.argv[2]
    doc = json.load(open(src, encoding="utf-8"))
    defs = doc["definitions"]
    os.makedirs(out, exist_ok=True)

    def fix(s, depth=0, path=()):
        if isinstance(s, list):
            return [fix(x, depth + 1, path) for x in s]
        if not isinstance(s, dict):
            return s
        if "$ref" in s:
            name = s["$ref"].split("/")[-1]
            if name in ("io.k8s.apimachinery.pkg.util.intstr.IntOrString",):
                return dict(INT_OR_STRING)
            if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
                return {"oneOf": [{"type": "string"}, {"type": "number"}]}
            if name == "io.k8s.apimachinery.pkg.apis.meta.v1.Time":
                return {"type": ["string", "null"], "format": "date-time"}
            if name in path:  # recursive type (e.g. JSONSchemaProps): accept anything below
                return {}
            return fix(defs[name], depth + 1, path + (name,))
        if s.get("format") == "int-or-string":
            return dict(INT_OR_STRING)
        r = {}
        for k, v in s.items():
            if k in ("description", "x-kubernetes-patch-strategy", "x-kubernetes-patch-merge-key",
                     "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type"):
                continue
            if k == "properties":
                r[k] = {pk: fix(pv, depth + 1, path) for pk, pv in v.items()}
            elif k in ("items", "additionalProperties") and isinstance(v, dict):
                r[k] = fix(v, depth + 1, path)
            else:
                r[k] = v
        if "properties" in r and "additionalProperties" not in r:
            r["additionalProperties"] = False
        return r

    written, derived = 0, []
    for name, d in defs.items():
        gvks = d.get("x-kubernetes-group-version-kind") or []
        for gvk in gvks:
            kind, group, version = gvk["kind"].lower(), gvk.get("group", ""), gvk["version"]
            g = group.split(".")[0]
            schema = fix(d, 0, (name,))
            # apiVersion and kind must match this file exactly.
            api = f"{group}/{version}" if group else version
            schema.setdefault("properties", {})
            schema["properties"]["apiVersion"] = {"type": "string", "enum": [api]}
            schema["properties"]["kind"] = {"type": "string", "enum": [gvk["kind"]]}
            schema["$schema"] = "http://json-schema.org/schema#"
            fname = f"{kind}-{g}-{version}.json" if g else f"{kind}-{version}.json"
            json.dump(schema, open(os.path.join(out, fname), "w"))
            written += 1
            if group == "autoscaling" and version == "v2beta2" and kind == "horizontalpodautoscaler":
                s2 = copy.deepcopy(schema)
                s2["properties"]["apiVersion"]["enum"] = ["autoscaling/v2"]
                json.dump(s2, open(os.path.join(out, "horizontalpodautoscaler-autoscaling-v2.json"), "w"))
                derived.append("autoscaling/v2 HorizontalPodAutoscaler (from v2beta2)")
    print(f"{written} kubeconform schemas from {doc.get('info')} into {out}; derived: {', '.join(derived) or 'none'}")


if __name__ == "__main__":
    main()
