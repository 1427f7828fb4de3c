//! `tensorflow.serving.ModelService`: GetModelStatus, from the same states REST reports.
//! HandleReloadConfigRequest hands a new model config to the model manager.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{finish, model_spec, status};
use crate::error::ApiError;
use crate::models::{self, AppState, ServableState};
use crate::proto::tensorflow::error::Code as TfCode;
use crate::proto::tensorflow::serving::model_service_server::ModelService;
use crate::proto::tensorflow::serving::{
    model_version_status, GetModelStatusRequest, GetModelStatusResponse, ModelVersionStatus,
    ReloadConfigRequest, ReloadConfigResponse, StatusProto,
};
use crate::serving;

pub struct Models {
    state: Arc<AppState>,
}

impl Models {
    pub fn new(state: Arc<AppState>) -> Self {
        Models { state }
    }
}

#[tonic::async_trait]
impl ModelService for Models {
    async fn get_model_status(
        &self,
        request: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        let request = request.into_inner();
        let name = request.model_spec.as_ref().map_or("", |s| &s.name);
        let guard = serving::track(&self.state, name, "grpc", "status");
        let result = self.status(&request);
        finish(guard, &result);
        result.map(Response::new)
    }

    /// Serves the request's `ModelServerConfig` from now on (models added, removed, policies
    /// and labels changed), as `--model_config_file` would. Answers, as TF Serving does, once
    /// the models it adds are AVAILABLE (UNKNOWN with the load error if one fails), within the
    /// call's deadline (`grpc-timeout`; [`RELOAD_WAIT`] without one).
    async fn handle_reload_config_request(
        &self,
        request: Request<ReloadConfigRequest>,
    ) -> Result<Response<ReloadConfigResponse>, Status> {
        let guard = serving::track(&self.state, "", "grpc", "reload_config");
        let limit = deadline(request.metadata()).unwrap_or(RELOAD_WAIT);
        let result = self.reload(request.into_inner(), limit).await;
        finish(guard, &result);
        result.map(Response::new)
    }
}

/// How long HandleReloadConfigRequest waits for the models it adds when the client set no
/// deadline.
pub const RELOAD_WAIT: Duration = Duration::from_secs(600);

/// The call's deadline from its `grpc-timeout` header (`<digits><H|M|S|m|u|n>`, gRPC over
/// HTTP/2's format), if the client set one.
pub(super) fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Models {
    async fn reload(
        &self,
        request: ReloadConfigRequest,
        limit: Duration,
    ) -> Result<ReloadConfigResponse, Status> {
        let control = self.state.control().ok_or_else(|| {
            status(ApiError::Unavailable(
                "this server has no model manager to reload".into(),
            ))
        })?;
        let config = request.config.unwrap_or_default();
        let added = control.reload(&config).map_err(status)?;
        drop(control);
        models::wait_until_available(&self.state, &added, limit)
            .await
            .map_err(status)?;
        Ok(ReloadConfigResponse {
            status: Some(StatusProto {
                error_code: TfCode::Ok as i32,
                error_message: String::new(),
            }),
        })
    }

    fn status(&self, request: &GetModelStatusRequest) -> Result<GetModelStatusResponse, Status> {
        let spec = model_spec(request.model_spec.as_ref())?;
        let versions = serving::status(&self.state, &spec).map_err(status)?;
        Ok(GetModelStatusResponse {
            model_version_status: versions
                .into_iter()
                .map(|v| ModelVersionStatus {
                    version: v.version as i64,
                    state: match v.state {
                        ServableState::Loading => model_version_status::State::Loading,
                        ServableState::Available => model_version_status::State::Available,
                        ServableState::Unloading => model_version_status::State::Unloading,
                        ServableState::End => model_version_status::State::End,
                    } as i32,
                    status: Some(StatusProto {
                        error_code: TfCode::from_str_name(v.error_code()).unwrap_or(TfCode::Unknown)
                            as i32,
                        error_message: v.error.unwrap_or_default(),
                    }),
                })
                .collect(),
        })
    }
}
