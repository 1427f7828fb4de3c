//! tract's plans for a model: fix what the graph leaves open, optimize, keep runnable plans (one
//! for any batch, and one per concrete batch size when the batch is free).

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{Factoid, InferenceFact};

use super::{dim, dtype};
use crate::error::ModelError;
use crate::signature::{Dim, Signature, TensorSpec};

/// An optimized tract plan, shared by the inference workers.
pub type Plan = Arc<TypedRunnableModel>;

/// A model's plans: one for any batch size and, when the batch is free, plans optimized for
/// concrete batch sizes (always 1; more for dynamic batching).
///
/// tract optimizes much better with concrete shapes: EfficientNet-Lite0 with a symbolic batch
/// runs in ~330 ms, the same graph with batch 1 in ~55 ms (this machine, BENCHMARKS.md). Single
/// requests, the common case, get the batch-1 plan; other batches the general one, or a concrete
/// one when dynamic batching asked for it.
#[derive(Clone)]
pub struct Plans {
    pub any: Plan,
    /// (batch size, plan), ascending by size; empty when the model fixes its batch.
    pub fixed: Vec<(usize, Plan)>,
    /// Whether every output keeps the batch as its first dimension, so a batch may be run
    /// instance by instance, or several requests merged into one batch and split again.
    pub batch_first: bool,
}

impl Plans {
    /// The plan to run inputs whose first dimension is `batch` (the runner's choice, for tests).
    #[cfg(test)]
    pub fn for_batch(&self, batch: Option<usize>) -> &Plan {
        batch
            .and_then(|b| self.fixed.iter().find(|(n, _)| *n == b))
            .map_or(&self.any, |(_, p)| p)
    }

    /// The plan made for batch 1, if the batch is free.
    #[cfg(test)]
    pub fn batch1(&self) -> Option<&Plan> {
        self.fixed.iter().find(|(n, _)| *n == 1).map(|(_, p)| p)
    }

    /// Batch sizes with a plan of their own, above 1 (dynamic batching's allowed sizes).
    pub fn batch_sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.fixed.iter().map(|(n, _)| *n).filter(|&n| n > 1)
    }
}

/// A model parsed and optimized: its signature and plans.
pub struct LoadedModel {
    pub signature: Signature,
    pub plan: Plans,
}

/// Parses `path`, gives every unknown input dimension a symbol (the first one `batch`), optimizes
/// the graph for those shapes and builds the plan (plus a batch-1 plan when the batch is free),
/// and a plan for each of `batch_sizes` too when the batch is free and every output keeps it
/// first (dynamic batching runs merged requests on those).
pub fn load_onnx_batched(path: &Path, batch_sizes: &[usize]) -> Result<LoadedModel, ModelError> {
    let tract_err = |stage: &'static str| {
        move |e: TractError| ModelError::Engine {
            engine: "tract",
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

    // Each input closed over its free dimensions; the inputs whose first dimension is free are
    // remembered, for the concrete-batch plans. The exporter's name for it does not matter:
    // `batch`, `N`, `batch_size`, tf2onnx's `unk__616` or none at all.
    let mut batched_inputs = Vec::with_capacity(input_names.len());
    for (ix, name) in input_names.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(tract_err("parse"))?.clone();
        let fixed = close_input_fact(&model, name, fact)?;
        let leading = fixed.shape.dim(0).and_then(|d| d.concretize());
        if leading.is_some_and(|d| d.to_i64().is_err()) {
            batched_inputs.push((ix, fixed.clone()));
        }
        model
            .set_input_fact(ix, fixed)
            .map_err(tract_err("parse"))?;
    }
    let concrete = |n: usize| -> Result<Plan, ModelError> {
        let mut one = model.clone();
        for (ix, fact) in &batched_inputs {
            let mut fact = fact.clone();
            fact.shape.set_dim(0, n.into());
            one.set_input_fact(*ix, fact)
                .map_err(tract_err("parse (concrete batch)"))?;
        }
        // The outputs' declared shapes may name the batch otherwise (tf2onnx: `unk__617` out,
        // `unk__616` in), which a concrete batch could not unify with: let tract infer them.
        for ix in 0..output_names.len() {
            one.set_output_fact(ix, InferenceFact::default())
                .map_err(tract_err("parse (concrete batch)"))?;
        }
        one.into_optimized()
            .map_err(tract_err("optimize (concrete batch)"))?
            .into_runnable()
            .map_err(tract_err("plan (concrete batch)"))
    };
    // Concrete plans only speed things up: one tract cannot make leaves the model served on
    // the general plan, with a warning.
    let concrete_or_warn = |n: usize| match concrete(n) {
        Ok(plan) => Some(plan),
        Err(e) => {
            tracing::warn!("no batch-{n} plan ({e}); batches of {n} run on the general plan");
            None
        }
    };
    let batch1 = if batched_inputs.is_empty() {
        None
    } else {
        concrete_or_warn(1)
    };
    // Outputs keep the batch first if, run at batch 1, each output's first dimension is 1.
    let batch_first = batch1.as_ref().is_some_and(|one| {
        let model = one.model();
        model.output_outlets().is_ok_and(|outlets| {
            outlets.iter().all(|&o| {
                model
                    .outlet_fact(o)
                    .is_ok_and(|f| f.shape.first() == Some(&TDim::Val(1)))
            })
        })
    });
    let mut fixed: Vec<(usize, Plan)> = batch1.into_iter().map(|p| (1, p)).collect();
    if batch_first {
        let mut sizes: Vec<usize> = batch_sizes.iter().copied().filter(|&n| n > 1).collect();
        sizes.sort_unstable();
        sizes.dedup();
        fixed.extend(
            sizes
                .into_iter()
                .filter_map(|n| concrete_or_warn(n).map(|p| (n, p))),
        );
    }

    // Every concrete plan made: the general one can take the model itself.
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
    Ok(LoadedModel {
        signature,
        plan: Plans {
            any,
            fixed,
            batch_first,
        },
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
    if dtype(dt).is_none() {
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
            let dtype = dtype(fact.datum_type).ok_or_else(|| {
                ModelError::Unsupported(format!(
                    "{kind} '{name}' has element type {:?}, which cannot be sent as JSON",
                    fact.datum_type
                ))
            })?;
            Ok(TensorSpec {
                name: name.clone(),
                dtype,
                shape: fact.shape.iter().map(dim).collect::<Vec<Dim>>(),
            })
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

    fn load_onnx(path: &Path) -> Result<LoadedModel, ModelError> {
        load_onnx_batched(path, &[])
    }

    #[test]
    fn a_free_batch_gets_a_batch_1_plan_that_agrees() {
        let loaded = load_onnx(&fixture("linear")).unwrap();
        let one = loaded.plan.batch1().expect("batch-1 plan");
        let x = tensor2(&[[1.0f32, 2.0, 3.0, 4.0]]);
        let a = one.run(tvec![x.clone().into_tvalue()]).unwrap();
        let b = loaded.plan.any.run(tvec![x.into_tvalue()]).unwrap();
        assert_eq!(a[0], b[0]);
        assert!(std::ptr::eq(loaded.plan.for_batch(Some(1)), one));
        assert!(loaded.plan.batch_first);
        assert!(std::ptr::eq(
            loaded.plan.for_batch(Some(2)),
            &loaded.plan.any
        ));
    }

    #[test]
    fn batch_plans_are_made_for_the_sizes_asked_and_agree() {
        let loaded = load_onnx_batched(&fixture("linear"), &[4, 2, 4, 1]).unwrap();
        let sizes: Vec<usize> = loaded.plan.fixed.iter().map(|(n, _)| *n).collect();
        assert_eq!(sizes, [1, 2, 4]);
        assert_eq!(loaded.plan.batch_sizes().collect::<Vec<_>>(), [2, 4]);
        let x = tensor2(&[[1.0f32, 2.0, 3.0, 4.0]; 4]);
        let a = loaded
            .plan
            .for_batch(Some(4))
            .run(tvec![x.clone().into_tvalue()])
            .unwrap();
        let b = loaded.plan.any.run(tvec![x.into_tvalue()]).unwrap();
        assert_eq!(a[0], b[0]);
        assert_eq!(a[0].shape(), [4, 3]);
        // A fixed batch gets no plans, whatever is asked.
        let fixed = load_onnx_batched(&fixture("fixed_batch"), &[2, 4]).unwrap();
        assert!(fixed.plan.fixed.is_empty());
    }

    #[test]
    fn a_free_batch_gets_its_plans_whatever_its_name() {
        for (name, input) in [
            ("dim_n", tensor2(&[[1.0f32, 2.0, 3.0, 4.0]])),
            ("dim_unk", tensor2(&[[1.0f32, 2.0, 3.0, 4.0]])),
            (
                "dim_spatial",
                Tensor::from_shape(&[1, 3, 2, 5], &[0.5f32; 30]).unwrap(),
            ),
        ] {
            let loaded = load_onnx_batched(&fixture(name), &[2]).unwrap();
            let one = loaded
                .plan
                .batch1()
                .unwrap_or_else(|| panic!("{name}: no batch-1 plan"));
            assert!(loaded.plan.batch_first, "{name}");
            assert_eq!(loaded.plan.batch_sizes().collect::<Vec<_>>(), [2], "{name}");
            let a = one.run(tvec![input.clone().into_tvalue()]).unwrap();
            let b = loaded.plan.any.run(tvec![input.into_tvalue()]).unwrap();
            assert_eq!(a[0], b[0], "{name}");
        }
        // Free spatial dimensions stay free in the batch-1 plan: another size runs too.
        let loaded = load_onnx(&fixture("dim_spatial")).unwrap();
        let x = Tensor::from_shape(&[1, 3, 7, 3], &[2.0f32; 63]).unwrap();
        let y = loaded
            .plan
            .batch1()
            .unwrap()
            .run(tvec![x.into_tvalue()])
            .unwrap();
        assert_eq!(y[0].shape(), [1, 3]);
    }

    #[test]
    fn a_fixed_batch_needs_no_second_plan() {
        let loaded = load_onnx(&fixture("fixed_batch")).unwrap();
        assert!(loaded.plan.batch1().is_none());
        assert!(!loaded.plan.batch_first);
    }
}
