//! TF Serving's config files (`--monitoring_config_file`, `--model_config_file`):
//! protobuf text format such as `prometheus_config { enable: true }`, parsed by prost-reflect
//! against the descriptors compiled from `proto/`, then turned into the generated message.
//! Errors name the file, line and column, and what was expected.

use std::path::Path;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage};

use super::FILE_DESCRIPTOR_SET;

/// Reads `path` as the text format of message `full_name` (e.g.
/// "tensorflow.serving.MonitoringConfig") into `M`, the generated type of that message.
///
/// Errors: the file cannot be read; a syntax error, unknown field or wrong value, as
/// `path:line:column: what`.
pub fn read<M: prost::Message + Default>(path: &Path, full_name: &str) -> Result<M, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text, full_name).map_err(|e| format!("{}:{e}", path.display()))
}

/// [`read`] on text: errors are `line:column: what`.
pub fn parse<M: prost::Message + Default>(text: &str, full_name: &str) -> Result<M, String> {
    let desc = pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("0:0: no message {full_name} in proto/"))?;
    let message = DynamicMessage::parse_text_format(desc, text).map_err(|e| {
        use miette::Diagnostic;
        let offset = e
            .labels()
            .and_then(|mut labels| labels.next())
            .map_or(text.len(), |l| l.offset());
        let (line, column) = position(text, offset);
        format!("{line}:{column}: {e}")
    })?;
    message
        .transcode_to::<M>()
        .map_err(|e| format!("0:0: cannot convert the {full_name}: {e}"))
}

/// The descriptors compiled from `proto/`, decoded once (a pool is an `Arc` inside: cheap to
/// clone; decoding it took most of a small config's parse).
fn pool() -> Result<DescriptorPool, String> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("0:0: the compiled protos cannot be read: {e}"))
    })
    .clone()
}

/// 1-based line and column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tensorflow::serving::MonitoringConfig;

    const MONITORING: &str = "tensorflow.serving.MonitoringConfig";

    #[test]
    fn reads_tf_servings_monitoring_config() {
        let c: MonitoringConfig = parse(
            "prometheus_config {\n  enable: true,\n  path: \"/metrics\"\n}\n",
            MONITORING,
        )
        .unwrap();
        let p = c.prometheus_config.unwrap();
        assert!(p.enable);
        assert_eq!(p.path, "/metrics");
    }

    #[test]
    fn errors_name_the_line_and_what_is_wrong() {
        let unknown = parse::<MonitoringConfig>(
            "prometheus_config {\n  enable: true\n  port: 9090\n}\n",
            MONITORING,
        )
        .unwrap_err();
        assert!(
            unknown.starts_with("3:3: ") && unknown.contains("port"),
            "{unknown}"
        );
        let syntax = parse::<MonitoringConfig>("prometheus_config {\n  enable: true\n", MONITORING)
            .unwrap_err();
        assert!(syntax.contains("end of input"), "{syntax}");
        let value = parse::<MonitoringConfig>("prometheus_config { enable: \"yes\" }", MONITORING)
            .unwrap_err();
        assert!(value.starts_with("1:29: "), "{value}");
    }
}
