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

/// A model's plans: one for any batch size and, when the batch is free, one optimized for a
/// batch of 1.
///
/// tract optimizes much better with concrete shapes: EfficientNet-Lite0 with a symbolic batch
/// runs in ~330 ms, the same graph with batch 1 in ~55 ms (this machine, BENCHMARKS.md). Single
/// requests, the common case, get the concrete plan; batches the general one.
#[derive(Clone)]
pub struct Plans {
    pub any: Plan,
    pub batch1: Option<Plan>,
    /// Whether a batch may run instance by instance on `batch1` (every output keeps the batch
    /// as its first dimension), which tract does faster than the batch at once.
    pub split_batches: bool,
}

impl Plans {
    /// The plan to run inputs whose first dimension is `batch`.
    pub fn for_batch(&self, batch: Option<usize>) -> &Plan {
        match (&self.batch1, batch) {
            (Some(p), Some(1)) => p,
            _ => &self.any,
        }
    }
}

/// A model parsed, optimized and ready to run.
pub struct LoadedModel {
    pub signature: Signature,
    pub plan: Plans,
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

    // Each input closed over its free dimensions; beside it, the same input with a free batch
    // set to 1, for the batch-1 plan.
    let batch: TDim = model.symbols.sym("batch").into();
    let mut batch1_facts = Vec::with_capacity(input_names.len());
    for (ix, name) in input_names.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(tract_err("parse"))?.clone();
        let fixed = close_input_fact(&model, name, fact)?;
        let mut one = fixed.clone();
        if one.shape.dim(0).and_then(|d| d.concretize()) == Some(batch.clone()) {
            one.shape.set_dim(0, 1.into());
            batch1_facts.push((ix, one));
        }
        model
            .set_input_fact(ix, fixed)
            .map_err(tract_err("parse"))?;
    }
    let batch1 = if batch1_facts.is_empty() {
        None
    } else {
        let mut one = model.clone();
        for (ix, fact) in batch1_facts {
            one.set_input_fact(ix, fact).map_err(tract_err("parse"))?;
        }
        Some(one)
    };

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
    let any = typed
        .into_optimized()
        .map_err(tract_err("optimize"))?
        .into_runnable()
        .map_err(tract_err("plan"))?;
    let batch1 = batch1
        .map(|one| {
            one.into_optimized()
                .map_err(tract_err("optimize (batch 1)"))?
                .into_runnable()
                .map_err(tract_err("plan (batch 1)"))
        })
        .transpose()?;
    // A batch can run instance by instance only if every output keeps the batch first.
    let split_batches = batch1.as_ref().is_some_and(|one| {
        let model = one.model();
        model.output_outlets().is_ok_and(|outlets| {
            outlets.iter().all(|&o| {
                model
                    .outlet_fact(o)
                    .is_ok_and(|f| f.shape.first() == Some(&TDim::Val(1)))
            })
        })
    });
    Ok(LoadedModel {
        signature,
        plan: Plans {
            any,
            batch1,
            split_batches,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models")
            .join(name)
            .join("1/model.onnx")
    }

    #[test]
    fn a_free_batch_gets_a_batch_1_plan_that_agrees() {
        let loaded = load_onnx(&fixture("linear")).unwrap();
        let one = loaded.plan.batch1.as_ref().expect("batch-1 plan");
        let x = tensor2(&[[1.0f32, 2.0, 3.0, 4.0]]);
        let a = one.run(tvec![x.clone().into_tvalue()]).unwrap();
        let b = loaded.plan.any.run(tvec![x.into_tvalue()]).unwrap();
        assert_eq!(a[0], b[0]);
        assert!(std::ptr::eq(loaded.plan.for_batch(Some(1)), one));
        assert!(loaded.plan.split_batches);
        assert!(std::ptr::eq(
            loaded.plan.for_batch(Some(2)),
            &loaded.plan.any
        ));
    }

    #[test]
    fn a_fixed_batch_needs_no_second_plan() {
        let loaded = load_onnx(&fixture("fixed_batch")).unwrap();
        assert!(loaded.plan.batch1.is_none());
        assert!(!loaded.plan.split_batches);
    }
}
