#!/usr/bin/env bash
# Render the Kubernetes manifests (deploy/kubernetes and its GKE overlay) with
# `kubectl kustomize`, validate them offline and strictly against the
# Kubernetes 1.30 and 1.35 schemas with kubernetes-validate (PyPI; it ships
# the schemas), and check the invariants the deployment relies on (drain and
# grace fit in terminationGracePeriodSeconds, probes on /health, non-root,
# read-only root filesystem). CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
if ! VENV=$(pinned_venv "$(gemma_cache)/venv-k8s" kubernetes-validate pyyaml); then
  echo "!!!!!!!!!! WARNING: kubernetes-validate could not be installed from PyPI: the Kubernetes manifests are NOT validated (SKIPPED) !!!!!!!!!!" >&2
  exit 0
fi
KUSTOMIZE=(kubectl kustomize)
if ! command -v kubectl >/dev/null; then
  echo "!!!!!!!!!! WARNING: kubectl (with its built-in kustomize) is not installed: the Kubernetes manifests are NOT validated (SKIPPED) !!!!!!!!!!" >&2
  exit 0
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"${KUSTOMIZE[@]}" deploy/kubernetes > "$OUT/base.yaml"
"${KUSTOMIZE[@]}" deploy/kubernetes/overlays/gke > "$OUT/gke.yaml"
"${KUSTOMIZE[@]}" deploy/kubernetes/overlays/inference-gateway > "$OUT/inference-gateway.yaml"
# The Gateway API kinds (InferencePool, HTTPRoute) have no schema in
# kubernetes-validate: scripts/validate-inference-pool.py checks them.
"$VENV/bin/python" - "$OUT/inference-gateway.yaml" "$OUT/inference-gateway-core.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and not d["apiVersion"].startswith(("inference.networking.", "gateway.networking."))]
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
for v in 1.30.0 1.35.0; do
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$OUT/base.yaml" "$OUT/gke.yaml" "$OUT/inference-gateway-core.yaml"
done
"$VENV/bin/python" scripts/validate-inference-pool.py "$OUT/inference-gateway.yaml"
"$VENV/bin/python" - "$OUT/base.yaml" "$OUT/gke.yaml" "$OUT/inference-gateway.yaml" <<'PY'
import sys, yaml
for path in sys.argv[1:]:
    # The gemma-rs resources (the overlay's picker has a Deployment and a Service of its own).
    docs = {}
    for d in yaml.safe_load_all(open(path)):
        if d and d["metadata"]["name"] == "gemma-rs":
            docs[d["kind"]] = d
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]:
        assert kind in docs, f"{path}: no {kind}"
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "gemma")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    args = c.get("args", [])
    grace = float(args[args.index("--shutdown-grace") + 1])
    drain = float(env.get("GEMMA_DRAIN_DELAY", 0))
    assert pod["terminationGracePeriodSeconds"] >= drain + grace + 5, f"{path}: terminationGracePeriodSeconds < drain {drain} + grace {grace} + 5"
    for p in ["startupProbe", "readinessProbe", "livenessProbe"]:
        assert c[p]["httpGet"]["path"] == "/health", f"{path}: {p} not on /health"
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"], f"{path}: not non-root / read-only"
    assert all(ic["securityContext"]["readOnlyRootFilesystem"] for ic in pod.get("initContainers", []))
    assert "memory" in c["resources"]["limits"] and "cpu" in c["resources"]["requests"]
    threads = int(args[args.index("--threads") + 1])
    cpu = c["resources"]["requests"]["cpu"]
    assert str(threads) == str(cpu), f"{path}: --threads {threads} differs from the CPU request {cpu}"
    r = c["readinessProbe"]
    assert r["periodSeconds"] * r["failureThreshold"] < drain, f"{path}: readiness takes longer than the drain delay to fail"
    hpa = docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert any(m["type"] == "Pods" and m["pods"]["metric"]["name"] == "tgi_queue_size" for m in hpa) and any(m["type"] == "Resource" for m in hpa)
    print(f"{path.split('/')[-1]}: {len(docs)} resources, drain {drain:g} s + grace {grace:g} s <= {pod['terminationGracePeriodSeconds']} s")
PY
echo "kubernetes manifests OK"
