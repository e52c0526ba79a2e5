#!/usr/bin/env python3
"""Check the rendered inference-gateway overlay (scripts/validate-k8s.sh
renders it): the InferencePool and HTTPRoute against the fields of
inference.networking.k8s.io/v1 and gateway.networking.k8s.io/v1 that they
use (kubernetes-validate has no schema for them), and that the pieces point
at each other: the pool selects the gemma-rs pods and no others, on their
container port; its picker is a Service on the EPP pods' gRPC port; the EPP
is told this pool's name; the route sends to this pool.

    python scripts/validate-inference-pool.py RENDERED.yaml
"""
import re
import sys

import yaml

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def fail(msg):
    sys.exit(f"{sys.argv[1]}: {msg}")


def only(obj, allowed, where):
    extra = set(obj) - set(allowed)
    if extra:
        fail(f"{where}: unknown field(s) {sorted(extra)}")


def port(n, where):
    if not isinstance(n, int) or not 1 <= n <= 65535:
        fail(f"{where}: port {n!r} is not an integer from 1 to 65535")
    return n


docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}

pools = [d for d in docs if d["kind"] == "InferencePool"]
if len(pools) != 1:
    fail(f"{len(pools)} InferencePools, expected 1")
pool = pools[0]
if pool["apiVersion"] != "inference.networking.k8s.io/v1":
    fail(f"InferencePool apiVersion {pool['apiVersion']}")
name = pool["metadata"]["name"]
if not NAME.match(name):
    fail(f"pool name {name!r}")
spec = pool["spec"]
only(spec, ["selector", "targetPorts", "endpointPickerRef"], "InferencePool.spec")
for field in ["selector", "targetPorts", "endpointPickerRef"]:
    if field not in spec:
        fail(f"InferencePool.spec.{field} is required")
only(spec["selector"], ["matchLabels"], "InferencePool.spec.selector")
labels = spec["selector"]["matchLabels"]
if not labels or not all(isinstance(v, str) and len(v) <= 63 and LABEL_VALUE.match(v) for v in labels.values()):
    fail(f"selector labels {labels}")
targets = spec["targetPorts"]
if not 1 <= len(targets) <= 8:
    fail(f"{len(targets)} targetPorts")
for t in targets:
    only(t, ["number"], "targetPorts[]")
    port(t["number"], "targetPorts[].number")
ref = spec["endpointPickerRef"]
only(ref, ["group", "kind", "name", "port", "failureMode"], "endpointPickerRef")
if ref.get("kind", "Service") != "Service" or ref.get("group", "") != "":
    fail("the picker is not a core Service")
if ref.get("failureMode", "FailClose") not in ("FailOpen", "FailClose"):
    fail(f"failureMode {ref['failureMode']}")
only(ref["port"], ["number"], "endpointPickerRef.port")
epp_port = port(ref["port"]["number"], "endpointPickerRef.port.number")

# The pool selects exactly the gemma-rs pods, on their container port.
selected = []
for d in docs:
    if d["kind"] == "Deployment":
        pod_labels = d["spec"]["template"]["metadata"].get("labels", {})
        if all(pod_labels.get(k) == v for k, v in labels.items()):
            selected.append(d)
if [d["metadata"]["name"] for d in selected] != ["gemma-rs"]:
    fail(f"the pool selects {[d['metadata']['name'] for d in selected]}, expected the gemma-rs Deployment only")
server = next(c for c in selected[0]["spec"]["template"]["spec"]["containers"] if c["name"] == "gemma")
container_ports = {p["containerPort"] for p in server.get("ports", [])}
if targets[0]["number"] not in container_ports:
    fail(f"targetPorts {targets[0]['number']} is not a gemma container port {sorted(container_ports)}")

# The picker: a Service on the EPP pods' gRPC port, told this pool's name.
svc = by.get(("Service", ref["name"]))
if svc is None:
    fail(f"no Service {ref['name']} for the endpoint picker")
sp = next((p for p in svc["spec"]["ports"] if p["port"] == epp_port), None)
if sp is None:
    fail(f"Service {ref['name']} has no port {epp_port}")
epps = [d for d in docs if d["kind"] == "Deployment" and all(d["spec"]["template"]["metadata"].get("labels", {}).get(k) == v for k, v in svc["spec"]["selector"].items())]
if len(epps) != 1 or epps[0]["metadata"]["name"] == "gemma-rs":
    fail(f"the picker Service selects {[d['metadata']['name'] for d in epps]}")
epp = epps[0]["spec"]["template"]["spec"]["containers"][0]
args = dict(a.lstrip("-").split("=", 1) for a in epp["args"] if "=" in a)
if args.get("pool-name") != name:
    fail(f"the EPP is told pool {args.get('pool-name')!r}, the pool is {name!r}")
if int(args.get("grpc-port", 9002)) != sp.get("targetPort", epp_port):
    fail(f"the EPP listens on {args.get('grpc-port')}, the Service sends to {sp.get('targetPort')}")
sa = epps[0]["spec"]["template"]["spec"].get("serviceAccountName")
role_refs = [d for d in docs if d["kind"] == "RoleBinding" and any(s.get("name") == sa for s in d["subjects"])]
rules = [r for b in role_refs for r in by[("Role", b["roleRef"]["name"])]["rules"]]
for group, res in [("inference.networking.k8s.io", "inferencepools"), ("", "pods")]:
    if not any(group in r["apiGroups"] and res in r["resources"] and {"get", "list", "watch"} <= set(r["verbs"]) for r in rules):
        fail(f"the EPP's service account may not watch {res}")

# The route sends to this pool.
routes = [d for d in docs if d["kind"] == "HTTPRoute"]
if len(routes) != 1 or routes[0]["apiVersion"] != "gateway.networking.k8s.io/v1":
    fail("expected one gateway.networking.k8s.io/v1 HTTPRoute")
rspec = routes[0]["spec"]
only(rspec, ["parentRefs", "hostnames", "rules"], "HTTPRoute.spec")
backends = [b for r in rspec["rules"] for b in r.get("backendRefs", [])]
if not backends or any((b.get("group"), b.get("kind"), b.get("name")) != ("inference.networking.k8s.io", "InferencePool", name) for b in backends):
    fail(f"the route's backends {backends} are not the pool {name}")
print(f"inference-gateway: pool {name} selects gemma-rs on {targets[0]['number']}, picker {ref['name']}:{epp_port} ({ref.get('failureMode', 'FailClose')}), route to the pool")
