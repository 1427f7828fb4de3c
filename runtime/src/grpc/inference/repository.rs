//! The model repository extension over gRPC: RepositoryIndex, RepositoryModelLoad and
//! RepositoryModelUnload of `inference.GRPCInferenceService`, through `serving::repository`
//! as the REST routes are.

use std::time::Duration;

use tonic::{Request, Status};

use crate::grpc::model::deadline;
use crate::grpc::{finish, status};
use crate::models::AppState;
use crate::proto::inference::repository_index_response::ModelIndex;
use crate::proto::inference::{
    RepositoryIndexRequest, RepositoryIndexResponse, RepositoryModelLoadRequest,
    RepositoryModelUnloadRequest,
};
use crate::serving::{self, repository};

/// The index; `repository_name` is ignored (there is one repository, the model config).
pub fn index(st: &AppState, request: RepositoryIndexRequest) -> RepositoryIndexResponse {
    let guard = serving::track(st, "", "grpc-v2", "repository_index");
    let models = repository::index(st, request.ready)
        .into_iter()
        .map(|e| ModelIndex {
            name: e.name,
            version: e.version.map(|v| v.to_string()).unwrap_or_default(),
            state: e.state.into(),
            reason: e.reason,
        })
        .collect();
    guard.finish_as("OK");
    RepositoryIndexResponse { models }
}

/// Loads a model of the config; answers once it is AVAILABLE, within the call's deadline.
pub async fn load(
    st: &AppState,
    request: Request<RepositoryModelLoadRequest>,
) -> Result<(), Status> {
    let limit = deadline(request.metadata()).unwrap_or(repository::LOAD_WAIT);
    let request = request.into_inner();
    let guard = serving::track(st, &request.model_name, "grpc-v2", "load");
    let result = load_within(st, &request, limit).await;
    finish(guard, &result);
    result
}

async fn load_within(
    st: &AppState,
    request: &RepositoryModelLoadRequest,
    limit: Duration,
) -> Result<(), Status> {
    serving::require_name(&request.model_name).map_err(status)?;
    repository::check_parameters(request.parameters.keys().map(String::as_str)).map_err(status)?;
    repository::load(st, &request.model_name, limit)
        .await
        .map_err(status)
}

/// Unloads a model of the config.
pub fn unload(st: &AppState, request: RepositoryModelUnloadRequest) -> Result<(), Status> {
    let guard = serving::track(st, &request.model_name, "grpc-v2", "unload");
    let result = serving::require_name(&request.model_name)
        .and_then(|()| repository::check_parameters(request.parameters.keys().map(String::as_str)))
        .and_then(|()| repository::unload(st, &request.model_name))
        .map_err(status);
    finish(guard, &result);
    result
}
