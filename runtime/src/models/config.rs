//! Which models the server serves: TF Serving's `--model_config_file` (a `ModelServerConfig` in
//! protobuf text format, `proto/tensorflow_serving/config/model_server_config.proto`), or the
//! one model of `--model_name` and `--model_base_path`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::policy::VersionPolicy;
use crate::proto::tensorflow::serving::{
    file_system_storage_path_source_config::servable_version_policy::PolicyChoice,
    model_server_config, ModelServerConfig,
};

/// The message `--model_config_file` holds.
pub const MESSAGE: &str = "tensorflow.serving.ModelServerConfig";

/// One model to serve, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// The name clients use (`/v1/models/<name>`, `model_spec.name`).
    pub name: String,
    /// The folder holding the numbered version folders (`<base_path>/<version>/model.onnx`).
    pub base_path: PathBuf,
    pub policy: VersionPolicy,
    /// Version labels (`stable` -> 1), applied once the version is AVAILABLE.
    pub labels: BTreeMap<String, u64>,
}

impl ModelConfig {
    /// The model `--model_name` and `--model_base_path` name: its latest version, no labels.
    pub fn single(name: &str, base_path: PathBuf) -> ModelConfig {
        ModelConfig {
            name: name.to_string(),
            base_path,
            policy: VersionPolicy::Latest(1),
            labels: BTreeMap::new(),
        }
    }
}

/// Reads and checks `--model_config_file`. Errors are `path:line:column: what`, naming the line
/// of the syntax error, unknown field, or the offending `config` entry.
pub fn read(path: &Path) -> Result<Vec<ModelConfig>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let at = |e: String| format!("{}:{e}", path.display());
    let lines = config_lines(&text);
    let models = parse(&text).map_err(at)?;
    check_folders(&models)
        .map_err(|(i, e)| at(format!("{}:1: {e}", lines.get(i).copied().unwrap_or(1))))?;
    Ok(models)
}

/// [`read`] on text, without looking at the folders: errors are `line:column: what`.
pub fn parse(text: &str) -> Result<Vec<ModelConfig>, String> {
    let config: ModelServerConfig = crate::proto::text::parse(text, MESSAGE)?;
    let lines = config_lines(text);
    let line_of = |i: usize| lines.get(i).copied().unwrap_or(1);
    check(&config).map_err(|(i, e)| format!("{}:1: {e}", line_of(i)))
}

/// Every model's base_path must be a folder (what a mount typo or a wrong path gives is a
/// clear error, not a model that never loads). The error names the index of the entry.
pub fn check_folders(models: &[ModelConfig]) -> Result<(), (usize, String)> {
    for (i, m) in models.iter().enumerate() {
        if !m.base_path.is_dir() {
            return Err((
                i,
                format!(
                    "config #{} ({}): base_path {} is not a folder; it must hold the numbered versions, e.g. {}/1/model.onnx",
                    i + 1,
                    m.name,
                    m.base_path.display(),
                    m.base_path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a `ModelServerConfig` (from a file or HandleReloadConfigRequest). The error names the
/// index of the `config` entry at fault.
pub fn check(config: &ModelServerConfig) -> Result<Vec<ModelConfig>, (usize, String)> {
    let list = match &config.config {
        Some(model_server_config::Config::ModelConfigList(list)) => &list.config,
        None => return Err((
            0,
            "no models: expected model_config_list { config { name: \"...\" base_path: \"...\" } }"
                .into(),
        )),
    };
    let mut seen = BTreeSet::new();
    let mut models = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let at = |e: String| (i, format!("config #{} ({}): {e}", i + 1, c.name));
        if c.name.is_empty() {
            return Err(at("has no name; add name: \"...\"".into()));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(at(format!(
                "the name '{}' is used twice; every model needs a name of its own",
                c.name
            )));
        }
        if c.base_path.is_empty() {
            return Err(at(
                "has no base_path; add base_path: \"/models/<name>\", the folder holding the numbered versions".into(),
            ));
        }
        match c.model_platform.as_str() {
            "" | "onnx" => {}
            "tensorflow" => tracing::warn!(
                "model '{}': model_platform \"tensorflow\" read as \"onnx\" (this server runs ONNX models)",
                c.name
            ),
            other => {
                return Err(at(format!(
                    "model_platform \"{other}\" is not served here; use \"onnx\""
                )))
            }
        }
        let policy = match c
            .model_version_policy
            .as_ref()
            .and_then(|p| p.policy_choice.as_ref())
        {
            None => VersionPolicy::Latest(1),
            Some(PolicyChoice::Latest(l)) => VersionPolicy::Latest(l.num_versions.max(1) as usize),
            Some(PolicyChoice::All(_)) => VersionPolicy::All,
            Some(PolicyChoice::Specific(s)) => {
                let versions = s
                    .versions
                    .iter()
                    .map(|&v| u64::try_from(v).map_err(|_| at(format!("version {v} is negative"))))
                    .collect::<Result<BTreeSet<u64>, _>>()?;
                if versions.is_empty() {
                    return Err(at(
                        "model_version_policy { specific { } } lists no versions; add versions: N"
                            .into(),
                    ));
                }
                VersionPolicy::Specific(versions)
            }
        };
        let mut labels = BTreeMap::new();
        for (label, &v) in &c.version_labels {
            if label.is_empty() || label.parse::<i64>().is_ok() {
                return Err(at(format!(
                    "version label '{label}' must be a word such as stable or canary, not empty or a number"
                )));
            }
            let v = u64::try_from(v).map_err(|_| {
                at(format!(
                    "label '{label}' names version {v}, which is negative"
                ))
            })?;
            labels.insert(label.clone(), v);
        }
        models.push(ModelConfig {
            name: c.name.clone(),
            base_path: PathBuf::from(&c.base_path),
            policy,
            labels,
        });
    }
    Ok(models)
}

/// The 1-based line of every `config` entry of the text, in order: the `config` field name is
/// found as a whole word outside strings and comments, followed by `{`, `<` or `:`.
fn config_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let (mut line, mut in_string, mut in_comment, mut escaped) = (1, None::<char>, false, false);
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            in_comment = false;
        } else if in_comment {
        } else if let Some(quote) = in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == quote {
                in_string = None;
            }
        } else if c == '#' {
            in_comment = true;
        } else if c == '"' || c == '\'' {
            in_string = Some(c);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if word == "config" && matches!(next, Some('{' | '<' | ':')) {
                lines.push(line);
            }
            continue;
        }
        i += 1;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
model_config_list {
  config {
    name: "resnet"
    base_path: "/models/resnet"
    model_platform: "onnx"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  # a comment naming config { in passing
  config {
    name: "linear"
    base_path: "/models/linear"
    model_version_policy { latest { num_versions: 2 } }
  }
}
"#;

    #[test]
    fn reads_tf_servings_format() {
        let models = parse(TWO).unwrap();
        assert_eq!(models.len(), 2);
        assert_eq!(models[0].name, "resnet");
        assert_eq!(models[0].base_path, PathBuf::from("/models/resnet"));
        assert_eq!(
            models[0].policy,
            VersionPolicy::Specific(BTreeSet::from([1, 2]))
        );
        assert_eq!(models[0].labels["stable"], 1);
        assert_eq!(models[0].labels["canary"], 2);
        assert_eq!(models[1].policy, VersionPolicy::Latest(2));
        assert_eq!(config_lines(TWO), vec![3, 12]);
    }

    #[test]
    fn errors_name_the_line() {
        let dup = TWO.replace("\"linear\"", "\"resnet\"");
        let err = parse(&dup).unwrap_err();
        assert!(
            err.starts_with("12:1: ") && err.contains("used twice"),
            "{err}"
        );
        let no_base = TWO.replace("base_path: \"/models/linear\"", "");
        let err = parse(&no_base).unwrap_err();
        assert!(
            err.starts_with("12:1: ") && err.contains("no base_path"),
            "{err}"
        );
        let unknown = TWO.replace("model_platform: \"onnx\"", "model_platfrom: \"onnx\"");
        let err = parse(&unknown).unwrap_err();
        assert!(
            err.starts_with("6:5: ") && err.contains("model_platfrom"),
            "{err}"
        );
        let syntax = TWO.replace("name: \"linear\"", "name: linear\"");
        let err = parse(&syntax).unwrap_err();
        assert!(err.starts_with("13:"), "{err}");
        let platform = TWO.replace("\"onnx\"", "\"pytorch\"");
        let err = parse(&platform).unwrap_err();
        assert!(err.starts_with("3:1: ") && err.contains("pytorch"), "{err}");
        assert!(parse("").unwrap_err().contains("no models"));
    }
}
