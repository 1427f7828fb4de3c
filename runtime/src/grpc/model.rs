//! `tensorflow.serving.ModelService`: GetModelStatus, from the same states REST reports.
//! HandleReloadConfigRequest hands a new model config to the model manager.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{finish, model_spec, status};
use crate::error::ApiError;
use crate::models::{AppState, ServableState};
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
    /// and labels changed), as `--model_config_file` would. Answers once the config is
    /// accepted; versions then load in the background (GetModelStatus shows them).
    async fn handle_reload_config_request(
        &self,
        request: Request<ReloadConfigRequest>,
    ) -> Result<Response<ReloadConfigResponse>, Status> {
        let guard = serving::track(&self.state, "", "grpc", "reload_config");
        let result = self.reload(request.into_inner());
        finish(guard, &result);
        result.map(Response::new)
    }
}

impl Models {
    fn reload(&self, request: ReloadConfigRequest) -> Result<ReloadConfigResponse, Status> {
        let reloader = self.state.reloader().ok_or_else(|| {
            status(ApiError::Unavailable(
                "this server has no model manager to reload".into(),
            ))
        })?;
        let config = request.config.unwrap_or_default();
        reloader.reload(&config).map_err(|e| {
            status(ApiError::BadRequest(format!(
                "the model config is refused: {e}"
            )))
        })?;
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
