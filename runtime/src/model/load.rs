//! Loading an ONNX file with tract: fix what the graph leaves open, optimize, keep a runnable plan.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{Factoid, InferenceFact};

use super::signature::{DType, Dim, Signature, TensorSpec};
use super::ModelError;

/// An optimized tract plan, shared by the inference workers.
pub type Plan = Arc<TypedRunnableModel>;

/// A model parsed, optimized and ready to run.
pub struct LoadedModel {
    pub signature: Signature,
    pub plan: Plan,
    /// Parse + type + optimize, without the warm-up run.
    pub load_time: Duration,
}

/// Parses `path`, gives every unknown input dimension a symbol (the first one `batch`), optimizes
/// the graph for those shapes and builds the plan.
pub fn load_onnx(path: &Path) -> Result<LoadedModel, ModelError> {
    let started = Instant::now();
    let tract_err = |stage: &'static str| {
        move |e: TractError| ModelError::Tract {
            stage,
            path: path.to_owned(),
            message: format!("{e:#}"),
        }
    };
    let mut model = tract_onnx::onnx()
        .model_for_path(path)
        .map_err(tract_err("parse"))?;

    let input_names: Vec<String> = model
        .input_outlets()
        .map_err(tract_err("parse"))?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let output_names: Vec<String> = model
        .output_outlets()
        .map_err(tract_err("parse"))?
        .iter()
        .map(|&o| {
            model
                .outlet_label(o)
                .map(str::to_owned)
                .unwrap_or_else(|| model.node(o.node).name.clone())
        })
        .collect();

    for (ix, name) in input_names.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(tract_err("parse"))?.clone();
        let fixed = close_input_fact(&model, name, fact)?;
        model
            .set_input_fact(ix, fixed)
            .map_err(tract_err("parse"))?;
    }

    let typed = model.into_typed().map_err(tract_err("type"))?;
    let signature = Signature {
        inputs: specs(
            &typed,
            typed.input_outlets().map_err(tract_err("type"))?,
            &input_names,
            "input",
        )?,
        outputs: specs(
            &typed,
            typed.output_outlets().map_err(tract_err("type"))?,
            &output_names,
            "output",
        )?,
    };
    let plan = typed
        .into_optimized()
        .map_err(tract_err("optimize"))?
        .into_runnable()
        .map_err(tract_err("plan"))?;
    Ok(LoadedModel {
        signature,
        plan,
        load_time: started.elapsed(),
    })
}

/// Input facts must have a known type and rank; unknown dimensions become symbols so the
/// optimizer can still work (the first, by convention the batch, is called `batch`).
fn close_input_fact(
    model: &InferenceModel,
    name: &str,
    fact: InferenceFact,
) -> Result<InferenceFact, ModelError> {
    let unsupported = |why: String| ModelError::Unsupported(format!("input '{name}': {why}"));
    let dt = fact
        .datum_type
        .concretize()
        .ok_or_else(|| unsupported("its element type is not declared in the model".into()))?;
    if DType::from_datum(dt).is_none() {
        return Err(unsupported(format!(
            "element type {dt:?} cannot be sent as JSON"
        )));
    }
    if fact.shape.is_open() {
        return Err(unsupported("its rank is not declared in the model".into()));
    }
    let dims: TVec<TDim> = fact
        .shape
        .dims()
        .enumerate()
        .map(|(k, d)| match d.concretize() {
            Some(d) => d,
            None if k == 0 => model.symbols.sym("batch").into(),
            None => model.symbols.sym(&format!("{}_{k}", sanitize(name))).into(),
        })
        .collect();
    Ok(InferenceFact::dt_shape(dt, dims))
}

/// Symbol names must be identifiers.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.is_empty() {
        format!("d_{s}")
    } else {
        s
    }
}

fn specs(
    model: &TypedModel,
    outlets: &[OutletId],
    names: &[String],
    kind: &str,
) -> Result<Vec<TensorSpec>, ModelError> {
    outlets
        .iter()
        .zip(names)
        .map(|(&outlet, name)| {
            let fact = model
                .outlet_fact(outlet)
                .map_err(|e| ModelError::Unsupported(format!("{kind} '{name}': {e}")))?;
            let dtype = DType::from_datum(fact.datum_type).ok_or_else(|| {
                ModelError::Unsupported(format!(
                    "{kind} '{name}' has element type {:?}, which cannot be sent as JSON",
                    fact.datum_type
                ))
            })?;
            Ok(TensorSpec {
                name: name.clone(),
                dtype,
                shape: fact.shape.iter().map(Dim::from_tdim).collect(),
            })
        })
        .collect()
}

/// Zero-filled inputs at batch size `batch` (other free dimensions at 1), for the warm-up and
/// `check-model` runs.
pub fn zero_inputs(signature: &Signature, batch: usize) -> TractResult<TVec<TValue>> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .enumerate()
                .map(|(k, d)| d.fixed().unwrap_or(if k == 0 { batch } else { 1 }))
                .collect();
            Ok(Tensor::zero_dt(spec.dtype.datum(), &shape)?.into_tvalue())
        })
        .collect()
}
