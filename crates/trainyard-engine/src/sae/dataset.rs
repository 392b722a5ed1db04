//! Autoencoders on an extracted activation dataset: its source model, site and token count
//! are the dataset's, and the layers are among those it holds.

use serde_json::{Map, Value};
use trainyard_core::ValidationError;
use trainyard_data::DatasetInfo;
use trainyard_data::extracted::ExtractedFrom;

use super::family::SOURCE_FIELD;
use super::memory;
use super::spec::{self, SaeHyperparameters};
use crate::family::Limits;
use crate::language::Site;

/// The autoencoder's hyperparameters on `dataset`: what the user gave, checked against what
/// the dataset holds, with the source model, site, token count and (by default) layers
/// taken from it.
pub(super) fn resolve_on_dataset(
    hyperparameters: &Map<String, Value>,
    dataset: &DatasetInfo,
    from: &ExtractedFrom,
    limits: &Limits,
) -> Result<SaeHyperparameters, ValidationError> {
    let mut hp = spec::resolve(hyperparameters)?;
    let name = &dataset.name;
    if hp
        .source_model
        .as_ref()
        .is_some_and(|m| *m != from.source_model)
    {
        return Err(ValidationError::new(
            SOURCE_FIELD,
            format!(
                "'{name}' holds activations of model '{}'; leave source_model out",
                from.source_model
            ),
        ));
    }
    if hyperparameters.contains_key("site") && hp.site.name() != from.site {
        return Err(ValidationError::new(
            "hyperparameters.site",
            format!("'{name}' holds {} activations; leave site out", from.site),
        ));
    }
    if hyperparameters.contains_key("n_tokens") && hp.n_tokens != from.n_tokens {
        return Err(ValidationError::new(
            "hyperparameters.n_tokens",
            format!(
                "'{name}' holds {} tokens; leave n_tokens out",
                from.n_tokens
            ),
        ));
    }
    if hp.layers.is_empty() {
        hp.layers = from.layers.clone();
    }
    if let Some(layer) = hp.layers.iter().find(|l| !from.layers.contains(l)) {
        return Err(ValidationError::new(
            "hyperparameters.layers",
            format!(
                "'{name}' holds layer(s) {:?}, not layer {layer}",
                from.layers
            ),
        ));
    }
    hp.source_model = Some(from.source_model.clone());
    hp.site = Site::parse(&from.site);
    hp.n_tokens = from.n_tokens;
    let depth = from.layers.iter().max().map_or(1, |l| l + 1);
    spec::check_against_source(&hp, depth, from.d_model)?;
    memory::check_fits(&hp, hp.layers.len(), from.d_model, limits.job_memory_mb)?;
    Ok(hp)
}

/// The dataset's activations a job holds beside its own normalised copy, in MB.
pub(super) fn dataset_mb(from: &ExtractedFrom) -> f64 {
    let rows = from.n_tokens + from.validation_tokens;
    (rows * from.d_model * from.layers.len() * 4) as f64 / (1 << 20) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> (DatasetInfo, ExtractedFrom) {
        let from = ExtractedFrom {
            source_model: "lm".into(),
            text_dataset: "shakespeare".into(),
            layers: vec![1, 2],
            site: "mlp_out".into(),
            n_tokens: 4096,
            validation_tokens: 512,
            d_model: 32,
            block_size: 64,
            statistics: Vec::new(),
        };
        let info = DatasetInfo {
            name: "acts".into(),
            description: String::new(),
            task: trainyard_core::Task::Unlabeled,
            n_rows: 4096,
            n_features: 32,
            feature_names: Vec::new(),
            target_name: String::new(),
            classes: None,
            image_shape: None,
            test_rows: None,
            license: String::new(),
            extracted_from: Some(from.clone()),
        };
        (info, from)
    }

    fn resolve(hp: serde_json::Value) -> Result<SaeHyperparameters, ValidationError> {
        let (info, from) = info();
        let limits = Limits {
            job_memory_mb: 4096,
            batch_halvings: 0,
        };
        resolve_on_dataset(hp.as_object().unwrap(), &info, &from, &limits)
    }

    #[test]
    fn the_dataset_decides_source_site_tokens_and_default_layers() {
        let hp = resolve(json!({"k": 8})).unwrap();
        assert_eq!(hp.source_model.as_deref(), Some("lm"));
        assert_eq!(hp.site, Site::MlpOut);
        assert_eq!((hp.n_tokens, hp.layers.clone()), (4096, vec![1, 2]));
        assert_eq!(resolve(json!({"layers": [2]})).unwrap().layers, vec![2]);
        assert!(resolve(json!({"source_model": "lm", "site": "mlp_out"})).is_ok());
    }

    #[test]
    fn what_contradicts_the_dataset_is_refused_naming_the_field() {
        for (hp, field) in [
            (json!({"layers": [0]}), "hyperparameters.layers"),
            (json!({"source_model": "other"}), SOURCE_FIELD),
            (json!({"site": "attn_out"}), "hyperparameters.site"),
            (json!({"n_tokens": 100}), "hyperparameters.n_tokens"),
            (json!({"k": 1000}), "hyperparameters.k"),
        ] {
            let e = resolve(hp.clone()).unwrap_err();
            assert_eq!(e.field, field, "{hp}: {e}");
        }
    }
}
