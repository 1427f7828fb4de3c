//! The request metrics and access log seen from the models served: a request's model label
//! (its name if served, else `_unknown`), and the per-version gauges read at each scrape.

use crate::metrics::{metrics, ModelGauges, RequestGuard, VersionGauge, UNKNOWN_MODEL};
use crate::models::{AppState, Servable, VersionStatus};

/// Starts timing a request to `model` over `api` ("rest", "grpc", "v2", "grpc-v2") for `method`: see
/// [`crate::metrics::Metrics::request`]. A model this server does not serve is labelled
/// `_unknown`, so that client-chosen names cannot create time series.
pub fn track(st: &AppState, model: &str, api: &'static str, method: &'static str) -> RequestGuard {
    let label = if st.models().contains_key(model) {
        model.to_string()
    } else {
        UNKNOWN_MODEL.to_string()
    };
    metrics().request(label, api, method)
}

/// Prometheus' text exposition, with every version's state, load time and queue read now.
pub fn render_metrics(st: &AppState) -> Result<String, String> {
    let models = st.models();
    let gauges: Vec<ModelGauges<'_>> = models
        .iter()
        .map(|(name, entry)| {
            let mut queued = 0;
            let versions = entry
                .versions
                .iter()
                .map(|(version, servable)| {
                    let mut load_time = None;
                    if let Servable::Available(model) = servable {
                        load_time = Some(model.load_time);
                        queued += model.pool.queued();
                    }
                    VersionGauge {
                        version: *version,
                        state: VersionStatus::of(*version, servable).state.name(),
                        load_time,
                    }
                })
                .collect();
            ModelGauges {
                name,
                queued,
                versions,
            }
        })
        .collect();
    metrics().render(&gauges)
}
