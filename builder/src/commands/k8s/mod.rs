//! `builder k8s`: Kubernetes and KServe manifests for a serving image, made from the image's own
//! labels (its CPU contract, engines, embedded model), so each pod lands on a node whose CPU can
//! run it (node-feature-discovery labels) and sizes its threads to its CPU limit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{user_namespace, LABEL_PREFIX};
use crate::docker;

pub mod manifests;
pub mod nodes;

pub use manifests::Target;

/// Write Kubernetes and KServe manifests for a serving image: a KServe ServingRuntime (or
/// ClusterServingRuntime) and InferenceService, and a plain Deployment + Service +
/// HorizontalPodAutoscaler + PodDisruptionBudget for clusters without KServe. Pods are pinned
/// to nodes whose CPUs have what the image needs (node-feature-discovery's
/// feature.node.kubernetes.io/cpu-cpuid.* labels, from the image's io.onnx-serving.* labels),
/// run non-root on a read-only root filesystem with every capability dropped, and get equal CPU
/// requests and limits, which the runtime reads (cgroup quota) to size its threads.
#[derive(clap::Args)]
pub struct Args {
    /// A serving image on this host [default: $USER/onnx-serving].
    image: Option<String>,
    /// The reference the cluster pulls, best the digest `builder push` printed
    /// (registry/me/onnx-serving@sha256:…) [default: IMAGE].
    #[arg(long)]
    image_ref: Option<String>,
    /// Folder to write servingruntime.yaml, inferenceservice.yaml and deployment.yaml to.
    #[arg(long, default_value = "k8s")]
    out: PathBuf,
    /// Name of the objects [default: the embedded model's name, else onnx-serving].
    #[arg(long)]
    name: Option<String>,
    /// Namespace of the namespaced objects [default: none; kubectl -n decides].
    #[arg(long)]
    namespace: Option<String>,
    /// Model the Deployment serves from its volume, for an image without an embedded model.
    #[arg(long, default_value = "model")]
    model_name: String,
    /// KServe storageUri of the model folder holding <version>/model.onnx (s3://, gs://,
    /// pvc://…) for an image without an embedded model [default: pvc://<name>-models].
    #[arg(long)]
    storage_uri: Option<String>,
    /// CPU request and limit per pod (a Kubernetes quantity: 2, 1500m).
    #[arg(long, default_value = "2")]
    cpu: String,
    /// Memory request and limit per pod.
    #[arg(long, default_value = "2Gi")]
    memory: String,
    /// Fewest replicas.
    #[arg(long, default_value_t = 1)]
    min_replicas: u32,
    /// Most replicas the autoscaler may run.
    #[arg(long, default_value_t = 4)]
    max_replicas: u32,
    /// Write a ClusterServingRuntime (every namespace) instead of a ServingRuntime.
    #[arg(long)]
    cluster_runtime: bool,
}

impl Args {
    /// Reads the image's labels, writes the manifests, lists the files.
    pub async fn run(self) -> Result<()> {
        let image = self
            .image
            .clone()
            .unwrap_or_else(|| format!("{}/onnx-serving", user_namespace()));
        let docker = docker::connect().await?;
        if !docker::image_exists(&docker, &image).await? {
            bail!("no image {image} here: build it with `builder serve-image`, or `docker pull` it first");
        }
        let labels = docker::image_labels(&docker, &image).await?;
        let options = Options {
            image_ref: self.image_ref.unwrap_or(image),
            name: self.name,
            namespace: self.namespace,
            model_name: self.model_name,
            storage_uri: self.storage_uri,
            cpu: self.cpu,
            memory: self.memory,
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            cluster_runtime: self.cluster_runtime,
        };
        let target = target(&labels, options)?;
        let required = nodes::required_sets(&labels);
        eprintln!(
            "CPU contract: {}; node selector: {}",
            if required.is_empty() {
                "portable".to_string()
            } else {
                required.join(" ")
            },
            target
                .node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for file in write(&target, &self.out)? {
            println!("{}", file.display());
        }
        Ok(())
    }
}

/// The choices `builder k8s` takes besides the image's labels.
#[derive(Clone, Debug)]
pub struct Options {
    /// The reference the cluster pulls.
    pub image_ref: String,
    /// Object name [default: the embedded model's name, else onnx-serving].
    pub name: Option<String>,
    /// Namespace of namespaced objects.
    pub namespace: Option<String>,
    /// The Deployment's model, when none is embedded.
    pub model_name: String,
    /// KServe storageUri [default: pvc://<name>-models].
    pub storage_uri: Option<String>,
    /// CPU request = limit.
    pub cpu: String,
    /// Memory request = limit.
    pub memory: String,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// ClusterServingRuntime instead of ServingRuntime.
    pub cluster_runtime: bool,
}

/// What the manifests are made of, from an image's labels and the options. Errors: a name that
/// is not a DNS-1123 label, replica bounds upside down, a CPU quantity Kubernetes refuses.
pub fn target(labels: &HashMap<String, String>, o: Options) -> Result<Target> {
    let embedded_model = labels.get(&format!("{LABEL_PREFIX}model-name")).cloned();
    let name = o
        .name
        .or_else(|| {
            embedded_model
                .as_ref()
                .map(|m| m.to_lowercase().replace('_', "-"))
        })
        .unwrap_or_else(|| "onnx-serving".into());
    if !is_dns_label(&name) || name.len() > 50 {
        bail!("'{name}' cannot name Kubernetes objects: use --name with at most 50 lowercase letters, digits and '-'");
    }
    if o.min_replicas == 0 || o.min_replicas > o.max_replicas {
        bail!(
            "--min-replicas {} and --max-replicas {}: need 1 <= min <= max",
            o.min_replicas,
            o.max_replicas
        );
    }
    if !is_cpu_quantity(&o.cpu) {
        bail!("--cpu {}: not a CPU quantity (2, 0.5, 1500m)", o.cpu);
    }
    let version = labels
        .get("org.opencontainers.image.version")
        .cloned()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").into());
    let kube_labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), name.clone()),
        (
            "app.kubernetes.io/component".to_string(),
            "model-server".to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "onnx-serving".to_string(),
        ),
        ("app.kubernetes.io/version".to_string(), version),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "onnx-serving-builder".to_string(),
        ),
    ]);
    Ok(Target {
        storage_uri: o
            .storage_uri
            .unwrap_or_else(|| format!("pvc://{name}-models")),
        models_claim: format!("{name}-models"),
        name,
        namespace: o.namespace,
        image: o.image_ref,
        embedded_model,
        model_name: o.model_name,
        cpu: o.cpu,
        memory: o.memory,
        min_replicas: o.min_replicas,
        max_replicas: o.max_replicas,
        node_selector: nodes::node_selector(labels),
        protocols: vec!["v1", "grpc-v1", "v2", "grpc-v2"],
        cluster_runtime: o.cluster_runtime,
        labels: kube_labels,
    })
}

/// The manifests as (file name, YAML documents).
pub fn render(t: &Target) -> Result<Vec<(&'static str, String)>> {
    let files = [
        ("servingruntime.yaml", vec![manifests::serving_runtime(t)]),
        (
            "inferenceservice.yaml",
            vec![manifests::inference_service(t)],
        ),
        (
            "deployment.yaml",
            vec![
                manifests::deployment(t),
                manifests::service(t),
                manifests::autoscaler(t),
                manifests::disruption_budget(t),
            ],
        ),
    ];
    files
        .into_iter()
        .map(|(file, docs)| Ok((file, yaml_documents(&docs)?)))
        .collect()
}

/// Writes the manifests into `out` (created); returns the files.
pub fn write(t: &Target, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    for (file, text) in render(t)? {
        let path = out.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn yaml_documents(docs: &[Value]) -> Result<String> {
    let mut text = String::from("# Generated by `builder k8s` from the image's labels.\n");
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            text.push_str("---\n");
        }
        text.push_str(&serde_norway::to_string(doc).context("cannot write YAML")?);
    }
    Ok(text)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_cpu_quantity(s: &str) -> bool {
    match s.strip_suffix('m') {
        Some(milli) => milli.parse::<u64>().is_ok_and(|v| v > 0),
        None => s.parse::<f64>().is_ok_and(|v| v > 0.0 && v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            image_ref: "reg.example:5000/me/onnx-serving@sha256:abc".into(),
            name: None,
            namespace: Some("models".into()),
            model_name: "resnet".into(),
            storage_uri: None,
            cpu: "2".into(),
            memory: "2Gi".into(),
            min_replicas: 1,
            max_replicas: 4,
            cluster_runtime: false,
        }
    }

    #[test]
    fn names_come_from_the_embedded_model_and_are_checked() {
        let labels = HashMap::from([(
            format!("{LABEL_PREFIX}model-name"),
            "Squeeze_Net".to_string(),
        )]);
        assert_eq!(target(&labels, options()).unwrap().name, "squeeze-net");
        assert_eq!(
            target(&HashMap::new(), options()).unwrap().name,
            "onnx-serving"
        );
        let bad = Options {
            name: Some("Not OK".into()),
            ..options()
        };
        assert!(target(&HashMap::new(), bad).is_err());
        let upside_down = Options {
            min_replicas: 5,
            ..options()
        };
        assert!(target(&HashMap::new(), upside_down).is_err());
    }

    #[test]
    fn cpu_quantities() {
        for ok in ["2", "0.5", "1500m"] {
            assert!(is_cpu_quantity(ok), "{ok}");
        }
        for bad in ["", "two", "-1", "1.5m", "0"] {
            assert!(!is_cpu_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn renders_yaml_that_reads_back() {
        let t = target(&HashMap::new(), options()).unwrap();
        let files = render(&t).unwrap();
        assert_eq!(files.len(), 3);
        let deployment = &files[2].1;
        let docs: Vec<Value> = deployment
            .split("\n---\n")
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Deployment",
                "Service",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget"
            ]
        );
        let c = &docs[0]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"]["cpu"], "2");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        let runtime: Value = serde_norway::from_str(&files[0].1).unwrap();
        assert_eq!(runtime["spec"]["supportedModelFormats"][0]["priority"], 3);
        assert!(runtime["spec"]["containers"][0]["args"][0]
            .as_str()
            .unwrap()
            .contains("{{.Name}}"));
    }
}
