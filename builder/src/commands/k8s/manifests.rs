//! The Kubernetes objects `builder k8s` writes, as JSON values (serialized to YAML by the
//! caller): a KServe `ServingRuntime`/`ClusterServingRuntime` and `InferenceService`
//! (serving.kserve.io), and for clusters without KServe a `Deployment`, `Service`,
//! `HorizontalPodAutoscaler` and `PodDisruptionBudget`. Field names are Kubernetes' and KServe's
//! (`serving.kserve.io_*.yaml` CRDs); the tests validate every object against those schemas.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// KServe's ports, as its TF Serving runtime uses them: REST on 8080, gRPC on 9000.
pub const KSERVE_REST_PORT: u16 = 8080;
/// KServe's gRPC port.
pub const KSERVE_GRPC_PORT: u16 = 9000;
/// The image's own ports (TF Serving's), used by the plain Deployment.
pub const REST_PORT: u16 = 8501;
/// gRPC, TF Serving's port.
pub const GRPC_PORT: u16 = 8500;
/// Where the runtime serves Prometheus metrics with --enable_metrics (TF Serving's path).
pub const METRICS_PATH: &str = "/monitoring/prometheus/metrics";
/// The non-root user of the serving image (`USER 65532:65532`, distroless' "nonroot").
pub const USER_ID: u64 = 65532;
/// The runtime in the image.
const RUNTIME: &str = "/usr/local/bin/runtime";

/// Everything the manifests are made from.
#[derive(Clone, Debug)]
pub struct Target {
    /// Object name (lowercase DNS-1123), e.g. `onnx-serving` or `resnet`.
    pub name: String,
    /// Namespace for namespaced objects; `None` leaves it to `kubectl -n`.
    pub namespace: Option<String>,
    /// The image reference the cluster pulls (best a digest: `reg/me/onnx-serving@sha256:…`).
    pub image: String,
    /// The model embedded in the image, if any (`io.onnx-serving.model-name`).
    pub embedded_model: Option<String>,
    /// The model a Deployment serves from its volume (ignored when one is embedded).
    pub model_name: String,
    /// KServe `storageUri` of a model folder holding `<version>/model.onnx`.
    pub storage_uri: String,
    /// PersistentVolumeClaim holding `<version>/model.onnx` for the plain Deployment.
    pub models_claim: String,
    /// CPU request and limit, in Kubernetes quantity (`2`, `1500m`): equal, so the pod is
    /// Guaranteed and the runtime sizes its threads to it (cgroup quota).
    pub cpu: String,
    /// Memory request and limit (`2Gi`).
    pub memory: String,
    /// Replicas bounds for KServe and the HorizontalPodAutoscaler.
    pub min_replicas: u32,
    /// Upper bound.
    pub max_replicas: u32,
    /// Node selector: architecture and NFD CPU labels (`nodes::node_selector`).
    pub node_selector: BTreeMap<String, String>,
    /// The KServe protocol versions the runtime serves.
    pub protocols: Vec<&'static str>,
    /// Write a `ClusterServingRuntime` (cluster-wide) instead of a `ServingRuntime`.
    pub cluster_runtime: bool,
    /// Labels for every object (app.kubernetes.io/*).
    pub labels: BTreeMap<String, String>,
}

impl Target {
    fn metadata(&self, name: &str, namespaced: bool) -> Value {
        let mut meta = json!({"name": name, "labels": self.labels});
        if let (true, Some(ns)) = (namespaced, &self.namespace) {
            meta["namespace"] = json!(ns);
        }
        meta
    }

    fn resources(&self) -> Value {
        let both = json!({"cpu": self.cpu, "memory": self.memory});
        json!({"requests": both, "limits": both})
    }

    fn runtime_name(&self) -> String {
        format!("{}-runtime", self.name)
    }
}

/// Non-root, read-only root filesystem, every capability dropped, no privilege escalation,
/// the runtime's default seccomp profile: all the runtime needs (it writes nothing).
pub fn security_context() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

/// Readiness (the model AVAILABLE: `runtime healthcheck`, as the image's HEALTHCHECK), liveness
/// (the REST port accepts) and a start-up allowance of 5 minutes for a large model's load.
fn probes(rest_port: u16, model: &str) -> (Value, Value, Value) {
    let check = json!({"exec": {"command": [
        RUNTIME, "healthcheck",
        format!("--rest_api_port={rest_port}"), format!("--model_name={model}")
    ]}});
    let mut readiness = check.clone();
    readiness["periodSeconds"] = json!(10);
    readiness["timeoutSeconds"] = json!(5);
    let mut startup = check;
    startup["periodSeconds"] = json!(5);
    startup["timeoutSeconds"] = json!(5);
    startup["failureThreshold"] = json!(60);
    let liveness =
        json!({"tcpSocket": {"port": rest_port}, "periodSeconds": 10, "failureThreshold": 3});
    (readiness, liveness, startup)
}

/// The serving container: `name`, the runtime's flags, ports, probes, resources, security.
fn container(
    t: &Target,
    name: &str,
    args: Vec<String>,
    rest: u16,
    grpc: u16,
    model: &str,
) -> Value {
    let (readiness, liveness, startup) = probes(rest, model);
    json!({
        "name": name,
        "image": t.image,
        "args": args,
        "ports": [
            {"name": "http1", "containerPort": rest, "protocol": "TCP"},
            {"name": "h2c", "containerPort": grpc, "protocol": "TCP"}
        ],
        "readinessProbe": readiness,
        "livenessProbe": liveness,
        "startupProbe": startup,
        "resources": t.resources(),
        "securityContext": security_context()
    })
}

fn kserve_args(model: &str, base_path: &str) -> Vec<String> {
    vec![
        format!("--model_name={model}"),
        format!("--model_base_path={base_path}"),
        format!("--port={KSERVE_GRPC_PORT}"),
        format!("--rest_api_port={KSERVE_REST_PORT}"),
        "--enable_metrics".into(),
    ]
}

/// Pod annotations that let a Prometheus (annotation-based discovery) scrape the runtime.
fn prometheus_annotations(port: u16) -> Value {
    json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": port.to_string(),
        "prometheus.io/path": METRICS_PATH
    })
}

/// KServe `ServingRuntime` (or `ClusterServingRuntime`): format `onnx` at priority 3 (KServe's
/// Triton and OpenVINO runtimes claim onnx at 1 and 2; equal priorities clash), the model from
/// the storage initializer's `/mnt/models`, named by KServe's `{{.Name}}`.
pub fn serving_runtime(t: &Target) -> Value {
    let kind = if t.cluster_runtime {
        "ClusterServingRuntime"
    } else {
        "ServingRuntime"
    };
    let args = kserve_args("{{.Name}}", "/mnt/models");
    json!({
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": kind,
        "metadata": t.metadata(&t.runtime_name(), !t.cluster_runtime),
        "spec": {
            "annotations": prometheus_annotations(KSERVE_REST_PORT),
            "supportedModelFormats": [
                {"name": "onnx", "version": "1", "autoSelect": true, "priority": 3}
            ],
            "protocolVersions": t.protocols,
            "multiModel": false,
            "nodeSelector": t.node_selector,
            "containers": [container(t, "kserve-container", args, KSERVE_REST_PORT, KSERVE_GRPC_PORT, "{{.Name}}")]
        }
    })
}

/// KServe `InferenceService`. Without an embedded model: the `onnx` model format served by our
/// runtime from `storageUri`. With one: the image itself as the predictor's container, no
/// storage initializer and no download at cold start.
pub fn inference_service(t: &Target) -> Value {
    let predictor = match &t.embedded_model {
        None => json!({
            "minReplicas": t.min_replicas,
            "maxReplicas": t.max_replicas,
            "nodeSelector": t.node_selector,
            "model": {
                "modelFormat": {"name": "onnx"},
                "runtime": t.runtime_name(),
                "storageUri": t.storage_uri,
                "resources": t.resources()
            }
        }),
        Some(model) => json!({
            "minReplicas": t.min_replicas,
            "maxReplicas": t.max_replicas,
            "nodeSelector": t.node_selector,
            "containers": [container(t, "kserve-container", kserve_args(model, "/models"), KSERVE_REST_PORT, KSERVE_GRPC_PORT, model)]
        }),
    };
    let mut meta = t.metadata(&t.name, true);
    // Raw Deployment mode: both ports (Knative's serverless mode takes one) and no activator.
    meta["annotations"] = json!({
        "serving.kserve.io/deploymentMode": "RawDeployment",
        "serving.kserve.io/enable-prometheus-scraping": "true"
    });
    json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor}
    })
}

/// The plain `Deployment`: the image's own ports and environment, the model from a read-only
/// PersistentVolumeClaim at `/models/<model>` unless the image embeds it.
pub fn deployment(t: &Target) -> Value {
    let model = t.embedded_model.as_deref().unwrap_or(&t.model_name);
    let env = json!([
        {"name": "MODEL_NAME", "value": model},
        {"name": "ONNX_SERVING_ENABLE_METRICS", "value": "true"}
    ]);
    let mut c = container(t, "onnx-serving", Vec::new(), REST_PORT, GRPC_PORT, model);
    c.as_object_mut().map(|o| o.remove("args"));
    c["env"] = env;
    c["ports"] = json!([
        {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}
    ]);
    let mut pod = json!({
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": true, "runAsUser": USER_ID, "runAsGroup": USER_ID, "fsGroup": USER_ID},
        "nodeSelector": t.node_selector,
        "containers": [c]
    });
    if t.embedded_model.is_none() {
        pod["volumes"] = json!([{"name": "models", "persistentVolumeClaim": {"claimName": t.models_claim, "readOnly": true}}]);
        pod["containers"][0]["volumeMounts"] =
            json!([{"name": "models", "mountPath": format!("/models/{model}"), "readOnly": true}]);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": t.metadata(&t.name, true),
        "spec": {
            "replicas": t.min_replicas,
            "selector": {"matchLabels": selector_labels(t)},
            "template": {
                "metadata": {"labels": t.labels, "annotations": prometheus_annotations(REST_PORT)},
                "spec": pod
            }
        }
    })
}

fn selector_labels(t: &Target) -> Value {
    json!({"app.kubernetes.io/name": t.labels.get("app.kubernetes.io/name")})
}

/// A `Service` in front of the Deployment: REST and gRPC (h2c) on the image's ports.
pub fn service(t: &Target) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": t.metadata(&t.name, true),
        "spec": {
            "selector": selector_labels(t),
            "ports": [
                {"name": "http", "port": REST_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}
            ]
        }
    })
}

/// A `HorizontalPodAutoscaler` on CPU and on the runtime's queue depth per pod
/// (`onnx_serving_queue_depth`, a Pods metric through a Prometheus metrics adapter): requests
/// waiting for a worker are the load signal that CPU, capped by the quota, hides.
pub fn autoscaler(t: &Target) -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": t.metadata(&t.name, true),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": t.name},
            "minReplicas": t.min_replicas,
            "maxReplicas": t.max_replicas,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                {"type": "Pods", "pods": {
                    "metric": {"name": "onnx_serving_queue_depth"},
                    "target": {"type": "AverageValue", "averageValue": "2"}
                }}
            ]
        }
    })
}

/// A `PodDisruptionBudget`: node drains take one pod at a time.
pub fn disruption_budget(t: &Target) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": t.metadata(&t.name, true),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(t)}}
    })
}
