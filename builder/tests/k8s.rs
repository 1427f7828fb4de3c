//! `builder k8s`'s manifests for a portable, an x86-64-v3, an x86-64-v4 and an int8-on-VNNI
//! image (labels as `builder devel`/`optimize` write them): every object validates against
//! Kubernetes' schemas (kubernetes-validate, strict) and KServe's CRD schemas, and the node
//! selector asks NFD for exactly what the image needs. Needs the venv (`make test-models`) and
//! KServe's CRDs (`../shared/reference/kserve-crd`, or `ONNX_SERVING_KSERVE_CRDS`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use builder::commands::k8s::{self, nodes::NFD_CPUID, Options};
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ sits in the workspace")
        .to_owned()
}

fn crds() -> PathBuf {
    let dir = std::env::var_os("ONNX_SERVING_KSERVE_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/reference/kserve-crd"));
    assert!(
        dir.join("inferenceservices.yaml").is_file(),
        "KServe's CRDs not found in {}: set ONNX_SERVING_KSERVE_CRDS",
        dir.display()
    );
    dir
}

fn python() -> PathBuf {
    std::env::var_os("ONNX_SERVING_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/venv/bin/python"))
}

fn labels(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (format!("io.onnx-serving.{k}"), v.clone()))
        .collect()
}

fn options(cluster_runtime: bool) -> Options {
    Options {
        image_ref: "127.0.0.1:5000/me/onnx-serving@sha256:0123".into(),
        name: None,
        namespace: Some("models".into()),
        model_name: "resnet".into(),
        storage_uri: Some("s3://models/resnet".into()),
        cpu: "1500m".into(),
        memory: "1Gi".into(),
        min_replicas: 1,
        max_replicas: 3,
        cluster_runtime,
    }
}

/// Writes the manifests for `labels`, validates them with the Python validator (which must
/// also reject a broken object, or it proves nothing), returns every object by kind.
fn render_and_validate(
    tag: &str,
    labels: &HashMap<String, String>,
    cluster: bool,
) -> HashMap<String, Value> {
    let out = std::env::temp_dir().join(format!("builder-k8s-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let target = k8s::target(labels, options(cluster)).expect("target");
    let files = k8s::write(&target, &out).expect("manifests written");
    let run = Command::new(python())
        .arg(workspace().join("scripts/validate_manifests.py"))
        .arg("--crds")
        .arg(crds())
        .args(&files)
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{tag}: invalid manifests:\n{report}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut objects = HashMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in text.split("\n---\n") {
            let value: Value = serde_norway::from_str(doc).expect("YAML");
            objects.insert(value["kind"].as_str().unwrap().to_string(), value);
        }
    }
    assert_eq!(report.matches("valid ").count(), objects.len(), "{report}");
    let _ = std::fs::remove_dir_all(&out);
    objects
}

fn cpuid_selector(object: &Value, pointer: &str) -> BTreeMap<String, String> {
    let selector: BTreeMap<String, String> =
        serde_json::from_value(object.pointer(pointer).cloned().unwrap_or_default()).unwrap();
    assert_eq!(selector["kubernetes.io/arch"], "amd64");
    selector
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(NFD_CPUID)?.to_string(), v)))
        .collect()
}

fn flags(selector: &BTreeMap<String, String>) -> Vec<&str> {
    assert!(selector.values().all(|v| v == "true"));
    selector.keys().map(String::as_str).collect()
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    let dir = std::env::temp_dir().join(format!("builder-k8s-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: many}\n---\n\
         apiVersion: serving.kserve.io/v1alpha1\nkind: ServingRuntime\nmetadata: {name: y}\n\
         spec: {containers: [{name: c, image: i}], supportedModelFormats: [{name: onnx, priority: high}]}\n",
    )
    .unwrap();
    let run = Command::new(python())
        .arg(workspace().join("scripts/validate_manifests.py"))
        .arg("--crds")
        .arg(crds())
        .arg(&file)
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(!run.status.success());
    assert_eq!(report.matches("INVALID").count(), 2, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn portable_image_runs_on_any_amd64_node() {
    let l = labels(&[
        ("target-cpu", "portable".into()),
        ("x86-64-level", "1".into()),
        ("instruction-sets", String::new()),
        ("engines", "tract,onnxruntime".into()),
    ]);
    let objects = render_and_validate("portable", &l, false);
    for (kind, pointer) in [
        ("ServingRuntime", "/spec/nodeSelector"),
        ("InferenceService", "/spec/predictor/nodeSelector"),
        ("Deployment", "/spec/template/spec/nodeSelector"),
    ] {
        assert!(cpuid_selector(&objects[kind], pointer).is_empty(), "{kind}");
    }
    let runtime = &objects["ServingRuntime"]["spec"];
    assert_eq!(runtime["supportedModelFormats"][0]["name"], "onnx");
    assert_eq!(runtime["supportedModelFormats"][0]["priority"], 3);
    assert_eq!(
        runtime["protocolVersions"],
        serde_json::json!(["v1", "grpc-v1", "v2", "grpc-v2"])
    );
    let args = runtime["containers"][0]["args"].to_string();
    assert!(
        args.contains("--model_name={{.Name}}") && args.contains("--model_base_path=/mnt/models"),
        "{args}"
    );
    let isvc = &objects["InferenceService"]["spec"]["predictor"]["model"];
    assert_eq!(isvc["storageUri"], "s3://models/resnet");
    assert_eq!(isvc["runtime"], "onnx-serving-runtime");
    // The Deployment's CPU limit is the quota the runtime sizes its threads to.
    let container = &objects["Deployment"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["cpu"], "1500m");
    assert_eq!(
        container["resources"]["requests"],
        container["resources"]["limits"]
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
}

#[test]
fn v3_image_needs_avx2_nodes() {
    let l = labels(&[
        ("target-cpu", "x86-64-v3".into()),
        ("x86-64-level", "3".into()),
        ("instruction-sets", hostcpu::level_features(3).join(" ")),
    ]);
    let objects = render_and_validate("v3", &l, true);
    let selector = cpuid_selector(&objects["ClusterServingRuntime"], "/spec/nodeSelector");
    assert_eq!(
        flags(&selector),
        ["AVX", "AVX2", "FMA3", "LAHF", "MOVBE", "XSAVE"]
    );
    assert_eq!(
        cpuid_selector(&objects["Deployment"], "/spec/template/spec/nodeSelector"),
        selector
    );
    assert!(objects["ClusterServingRuntime"]["metadata"]
        .get("namespace")
        .is_none());
}

#[test]
fn v4_image_with_an_embedded_int8_model_needs_avx512_and_vnni() {
    let l = labels(&[
        ("target-cpu", "native".into()),
        ("x86-64-level", "4".into()),
        (
            "instruction-sets",
            format!("{} AVX512VNNI", hostcpu::level_features(4).join(" ")),
        ),
        ("model-name", "resnet".into()),
        ("precision", "int8".into()),
        (
            "optimization.host-cpu-flags",
            "avx2 fma avx512f avx512_vnni".into(),
        ),
    ]);
    let objects = render_and_validate("v4", &l, false);
    let isvc = &objects["InferenceService"];
    assert_eq!(isvc["metadata"]["name"], "resnet");
    let selector = cpuid_selector(isvc, "/spec/predictor/nodeSelector");
    for flag in [
        "AVX2",
        "FMA3",
        "AVX512F",
        "AVX512BW",
        "AVX512CD",
        "AVX512DQ",
        "AVX512VL",
        "AVX512VNNI",
    ] {
        assert!(
            selector.contains_key(flag),
            "{flag} missing from {selector:?}"
        );
    }
    // The embedded model: the image itself is the predictor, no storage initializer.
    let predictor = &isvc["spec"]["predictor"];
    assert!(predictor.get("model").is_none());
    assert_eq!(
        predictor["containers"][0]["image"],
        "127.0.0.1:5000/me/onnx-serving@sha256:0123"
    );
    assert!(!isvc.to_string().contains("storageUri"));
    let deployment = &objects["Deployment"]["spec"]["template"]["spec"];
    assert!(deployment.get("volumes").is_none());
    assert_eq!(deployment["containers"][0]["env"][0]["value"], "resnet");
}
