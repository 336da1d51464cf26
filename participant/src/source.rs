//! The real source of updates: [`LocalTrainer`] trains on the hospital's private CSV, after the
//! privacy gate ([`crate::dp`]) has priced the round. The agent loop (registration, budget
//! persistence, signing, sending) is the same for every [`UpdateSource`].

use std::path::PathBuf;

use fedledger_ledger::records::PrivacyObject;
use fedledger_model::{Dataset, ModelKind, ModelSpec, Standardiser, TrainConfig};

pub use crate::work::{SourceError, UpdateSource, Work};
use crate::{
    client::Task,
    config::PrivacySection,
    dp::{self, Plan},
    plan::Planner,
    store::SpendRecord,
};

/// Convert the wire model description into the model crate's.
pub fn model_spec(task: &Task) -> Result<ModelSpec, SourceError> {
    let m = task
        .header
        .model
        .as_ref()
        .ok_or_else(|| SourceError::Task("task has no model".into()))?;
    let kind: ModelKind = m
        .kind
        .parse()
        .map_err(|e| SourceError::Task(format!("{e}")))?;
    let spec = ModelSpec {
        kind,
        features: m.features as usize,
        classes: m.classes as usize,
        hidden: m.hidden.iter().map(|h| *h as usize).collect(),
    };
    spec.validate()?;
    if spec.num_params() as u64 != task.header.num_params {
        return Err(SourceError::Task(format!(
            "model {:?} has {} parameters but the task carries {}",
            spec.kind,
            spec.num_params(),
            task.header.num_params
        )));
    }
    Ok(spec)
}

/// Trains on the hospital's own CSV (honest participant).
pub struct LocalTrainer {
    data_path: PathBuf,
    label_override: Option<String>,
    data: Option<Dataset>,
    privacy: PrivacySection,
    planner: Planner,
}

impl LocalTrainer {
    pub fn new(
        data_path: PathBuf,
        label_override: Option<String>,
        privacy: PrivacySection,
    ) -> Self {
        Self {
            data_path,
            label_override,
            data: None,
            privacy,
            planner: Planner::default(),
        }
    }

    fn data(&mut self, label_column: &str) -> Result<Dataset, SourceError> {
        if self.data.is_none() {
            let label = self
                .label_override
                .clone()
                .unwrap_or_else(|| label_column.to_owned());
            self.data = Some(Dataset::load_csv(&self.data_path, &label)?);
        }
        Ok(self.data.clone().expect("loaded above"))
    }
}

/// Local rows as the task's model reads them: the governed schema's features in its order
/// with values clamped to its ranges (or the task's columns exactly), labels within the model's
/// classes, standardised with the task's reference statistics (or the rows' own). `Ok(Err)`
/// says why the rows cannot serve this task.
pub fn prepare(
    mut data: Dataset,
    header: &fedledger_proto::TaskHeader,
    spec: &ModelSpec,
) -> Result<Result<Dataset, String>, SourceError> {
    if let Some(schema) = &header.schema {
        data = crate::governance::conform(&data, schema).map_err(SourceError::Task)?;
    } else if data.feature_names != header.feature_names {
        return Ok(Err(format!(
            "local data columns do not match the task's {} feature columns",
            header.feature_names.len()
        )));
    }
    if let Some(&y) = data.y.iter().find(|&&y| y as usize >= spec.classes) {
        return Ok(Err(format!(
            "local data has label {y} but the model has {} classes",
            spec.classes
        )));
    }
    data.classes = spec.classes;
    let standardiser = match &header.standardisation {
        Some(s) if !s.mean.is_empty() => Standardiser {
            mean: s.mean.clone(),
            std: s.std.clone(),
        },
        _ => Standardiser::fit(&data),
    };
    standardiser.apply(&mut data)?;
    Ok(Ok(data))
}

impl UpdateSource for LocalTrainer {
    fn check_schema(&mut self, schema: &fedledger_proto::DataSchema) -> Result<(), SourceError> {
        let data = self.data(&schema.label)?;
        crate::governance::feature_columns(&data.feature_names, schema)
            .map(|_| ())
            .map_err(SourceError::Task)
    }

    fn work(&mut self, task: &Task, spent: &[SpendRecord]) -> Result<Work, SourceError> {
        let spec = model_spec(task)?;
        let data = self.data(&task.header.label_column)?;
        let data = match prepare(data, &task.header, &spec)? {
            Ok(d) => d,
            Err(reason) => return Ok(Work::Decline(reason)),
        };
        let hyper = task
            .header
            .hyper
            .ok_or_else(|| SourceError::Task("task has no hyper-parameters".into()))?;
        let plan = dp::plan(
            &mut self.planner,
            &task.header,
            data.len(),
            spec.num_params(),
            &self.privacy,
            spent,
        )?;
        let (batch_size, steps, dp) = match &plan {
            Plan::Decline(reason) => return Ok(Work::Decline(reason.clone())),
            Plan::NonPrivate => (hyper.batch_size as usize, None, None),
            Plan::Private {
                dp,
                batch_size,
                steps,
                ..
            } => (*batch_size, *steps, Some(*dp)),
        };
        let cfg = TrainConfig {
            epochs: hyper.local_epochs as usize,
            batch_size,
            learning_rate: hyper.learning_rate,
            seed: task.header.round,
            dp,
            steps,
        };
        let outcome = dp::train(&spec, &task.params, &data, &cfg)?;
        let delta: Vec<f32> = outcome
            .params
            .iter()
            .zip(&task.params)
            .map(|(n, g)| n - g)
            .collect();
        let spend = match plan {
            Plan::Private { spend, .. } => Some(spend),
            _ => None,
        };
        // The spend must describe exactly the mechanism that ran (its sampling rate rounded up
        // as the ledger records it); nothing has left yet.
        if let Some(s) = &spend
            && (s.steps, s.sampling_rate)
                != (
                    outcome.steps,
                    PrivacyObject::recorded_sampling_rate(outcome.sampling_rate),
                )
        {
            return Err(SourceError::Privacy(format!(
                "trained {} steps at sampling rate {} but accounted {} at {}",
                outcome.steps, outcome.sampling_rate, s.steps, s.sampling_rate
            )));
        }
        Ok(Work::Update {
            delta,
            examples: data.len() as u64,
            spend,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedledger_proto as pb;

    fn task(kind: &str, num_params: u64) -> Task {
        Task {
            header: pb::TaskHeader {
                model: Some(pb::ModelSpec {
                    kind: kind.into(),
                    features: 3,
                    classes: 2,
                    hidden: vec![],
                }),
                num_params,
                ..Default::default()
            },
            params: vec![],
        }
    }

    #[test]
    fn model_spec_checks_kind_and_size() {
        assert_eq!(model_spec(&task("logreg", 4)).unwrap().num_params(), 4);
        assert!(matches!(
            model_spec(&task("svm", 4)),
            Err(SourceError::Task(_))
        ));
        assert!(matches!(
            model_spec(&task("logreg", 5)),
            Err(SourceError::Task(_))
        ));
    }
}
