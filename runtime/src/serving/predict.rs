//! The run itself: a request's checked inputs through the model's worker pool, the class
//! post-processing of an image signature, the output filter, and where CPU-heavy request work
//! runs (off the async executor).

use std::sync::Arc;

use crate::error::ApiError;
use crate::metrics::metrics;
use crate::models::ServedModel;
use crate::signature::Signature;
use crate::tensor::Tensor;

/// Request bodies (and claimed tensor sizes) above this many bytes are decoded on a blocking
/// thread, not on the async executor.
pub const DECODE_INLINE_MAX: usize = 64 * 1024;

/// Classify, Regress and the like: TF Serving methods that need TensorFlow's classification or
/// regression signatures. `predict` names the method to use instead, in the protocol's terms.
pub fn predict_only(method: &str, predict: &str) -> ApiError {
    ApiError::NotImplemented(format!(
        "{method} needs a TensorFlow classification or regression signature; ONNX models are served through {predict}"
    ))
}

/// Runs the model on checked inputs; with a class signature, post-processes its raw output into
/// the public outputs. The result follows `model.api_signature().outputs`.
pub async fn predict(model: &ServedModel, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ApiError> {
    let (mut outputs, took) = model.pool.run(inputs).await?;
    metrics().engine_run(&model.name, model.version, model.engine.name(), took);
    if let Some(post) = model.serving.as_ref().and_then(|s| s.output.as_ref()) {
        outputs = post
            .postprocess(&outputs[post.model_output])
            .map_err(ApiError::Internal)?;
    }
    Ok(outputs)
}

/// The indices of the outputs `filter` names, in its order (every output when it is empty);
/// BadRequest for a name the signature lacks or a repeated one.
pub fn select_outputs(sig: &Signature, filter: &[String]) -> Result<Vec<usize>, ApiError> {
    if filter.is_empty() {
        return Ok((0..sig.outputs.len()).collect());
    }
    let mut picked = Vec::with_capacity(filter.len());
    for name in filter {
        let i = sig
            .outputs
            .iter()
            .position(|s| s.name == *name)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "the request asks for output '{name}' (output_filter, or V2's outputs), which the model does not have; its outputs are {}",
                    sig.output_names()
                ))
            })?;
        if picked.contains(&i) {
            return Err(ApiError::BadRequest(format!(
                "the request asks for output '{name}' twice"
            )));
        }
        picked.push(i);
    }
    Ok(picked)
}

/// Runs CPU-heavy request work (image decoding, large bodies) on the blocking pool, off the
/// async executor, at most one per core at a time: more would only hold more decoded images in
/// memory, not finish sooner.
pub async fn off_executor<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    static DECODERS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    let decoders = DECODERS.get_or_init(|| {
        Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ))
    });
    // The turn goes with the work: a request dropped meanwhile (client gone, timeout) keeps
    // its core until its decoding ends.
    let turn = decoders
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(format!("request decoding stopped: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let done = work();
        drop(turn);
        done
    })
    .await
    .map_err(|e| ApiError::Internal(format!("request decoding stopped: {e}")))?
}
