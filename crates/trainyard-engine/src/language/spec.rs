//! `transformer_lm` and `transformer_classifier` hyperparameters: defaults (nanoGPT's CPU
//! recipe for character-level Shakespeare), bounds, and errors that name the field.

use serde_json::{Map, Value};
use trainyard_core::hyperparameters::{
    apply_keys, choice, early_stopping, float, type_error, uint,
};
use trainyard_core::{Task, ValidationError};

use super::LmHyperparameters;
use super::classifier::{Pooling, freezable};
use super::train::{ClassWeights, LmLoss, LrSchedule};
use trainyard_data::tokenizer::TokenizerKind;

const ALLOWED: [&str; 32] = [
    "n_layer",
    "n_head",
    "n_embd",
    "block_size",
    "bias",
    "batch_size",
    "max_steps",
    "learning_rate",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "eval_interval",
    "eval_batches",
    "seed",
    "dropout",
    "attention_dropout",
    "grad_accumulation",
    "lr_schedule",
    "early_stopping",
    "loss",
    "label_smoothing",
    "teacher",
    "distillation_temperature",
    "distillation_alpha",
    "tokenizer",
    "vocab_size",
    "gradient_checkpointing",
    "pooling",
    "class_weights",
    "init_from",
    "freeze",
];

/// What the model learns from, which bounds some hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A language model's corpus of this many characters.
    Corpus { chars: usize },
    /// A classifier's labeled texts.
    Labels { classes: usize },
}

/// The loss strategies a language model trains with.
pub const LOSSES: [&str; 2] = ["cross_entropy", "distillation"];

impl Default for LmHyperparameters {
    fn default() -> Self {
        LmHyperparameters {
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            block_size: 64,
            bias: true,
            batch_size: 12,
            // nanoGPT's recipe stops at 2000 steps (validation loss 1.79 on `shakespeare`); the
            // cosine schedule stretched to 2500 reached 1.730 in 161 s on a 2-core machine.
            max_steps: 2500,
            learning_rate: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 100,
            weight_decay: 0.1,
            grad_clip: 1.0,
            eval_interval: 200,
            eval_batches: 20,
            seed: 42,
            dropout: 0.0,
            attention_dropout: 0.0,
            grad_accumulation: 1,
            lr_schedule: LrSchedule::Cosine,
            early_stopping: None,
            loss: LmLoss::CrossEntropy,
            label_smoothing: 0.0,
            teacher: None,
            distillation_temperature: 2.0,
            distillation_alpha: 0.5,
            tokenizer: TokenizerKind::Char,
            vocab_size: 1024,
            gradient_checkpointing: false,
            pooling: Pooling::Mean,
            class_weights: None,
            init_from: None,
            freeze: vec![],
        }
    }
}

impl LmHyperparameters {
    /// A classifier's defaults: labeled texts are few and short, so words (byte-level BPE)
    /// rather than characters, two blocks, some dropout, batches of 32 and 1,000 steps.
    /// Measured on `trainyard bench --workload text_classify` (5,000 lines of five plays):
    /// these reach accuracy 0.396, where the language model's own defaults (characters, four
    /// blocks, 2,500 steps of 12) stay near chance (0.2) in four times as long.
    pub fn classifier_default() -> Self {
        LmHyperparameters {
            tokenizer: TokenizerKind::Bpe,
            vocab_size: 2000,
            n_layer: 2,
            dropout: 0.1,
            batch_size: 32,
            max_steps: 1000,
            eval_interval: 250,
            ..LmHyperparameters::default()
        }
    }
}

/// The user's hyperparameters over the defaults, checked against what the model learns from.
pub fn resolve(
    user: &Map<String, Value>,
    target: Target,
) -> Result<LmHyperparameters, ValidationError> {
    let mut hp = match target {
        Target::Corpus { .. } => LmHyperparameters::default(),
        Target::Labels { .. } => LmHyperparameters::classifier_default(),
    };
    let algorithm = match target {
        Target::Corpus { .. } => "transformer_lm",
        Target::Labels { .. } => "transformer_classifier",
    };
    apply_keys(user, algorithm, &ALLOWED, |key, v| {
        let field = format!("hyperparameters.{key}");
        if set_classifier_key(&mut hp, key, v, &field)? {
            return Ok(());
        }
        let int = |min, max| uint(&field, v, min, max);
        match key {
            "n_layer" => hp.n_layer = int(1, 48)? as usize,
            "n_head" => hp.n_head = int(1, 64)? as usize,
            "n_embd" => hp.n_embd = int(8, 4096)? as usize,
            "block_size" => hp.block_size = int(2, 4096)? as usize,
            "gradient_checkpointing" => {
                hp.gradient_checkpointing = v
                    .as_bool()
                    .ok_or_else(|| type_error(&field, "true or false", v))?
            }
            "bias" => {
                hp.bias = v
                    .as_bool()
                    .ok_or_else(|| type_error(&field, "true or false", v))?
            }
            "batch_size" => hp.batch_size = int(1, 4096)? as usize,
            "max_steps" => hp.max_steps = int(1, 10_000_000)?,
            "learning_rate" => hp.learning_rate = float(&field, v, 1e-7, 10.0)?,
            "min_lr" => hp.min_lr = float(&field, v, 0.0, 10.0)?,
            "warmup_steps" => hp.warmup_steps = int(0, 10_000_000)?,
            "weight_decay" => hp.weight_decay = float(&field, v, 0.0, 10.0)?,
            "grad_clip" => hp.grad_clip = float(&field, v, 0.0, 1e6)?,
            "eval_interval" => hp.eval_interval = int(1, 10_000_000)?,
            "eval_batches" => hp.eval_batches = int(1, 10_000)? as usize,
            "seed" => hp.seed = int(0, u64::MAX)?,
            "dropout" => hp.dropout = float(&field, v, 0.0, 0.9)?,
            "attention_dropout" => hp.attention_dropout = float(&field, v, 0.0, 0.9)?,
            "grad_accumulation" => hp.grad_accumulation = int(1, 1024)? as usize,
            "lr_schedule" => {
                hp.lr_schedule = match choice(&field, v, &["cosine", "constant"])? {
                    "constant" => LrSchedule::Constant,
                    _ => LrSchedule::Cosine,
                }
            }
            "loss" => {
                hp.loss = match choice(&field, v, &LOSSES)? {
                    "distillation" => LmLoss::Distillation,
                    _ => LmLoss::CrossEntropy,
                }
            }
            "tokenizer" => {
                hp.tokenizer = match choice(&field, v, &["char", "bpe"])? {
                    "bpe" => TokenizerKind::Bpe,
                    _ => TokenizerKind::Char,
                }
            }
            "vocab_size" => hp.vocab_size = int(257, 65_536)? as usize,
            "label_smoothing" => hp.label_smoothing = float(&field, v, 0.0, 0.5)?,
            // The resolved spec stores `null` when there is none.
            "teacher" if v.is_null() => hp.teacher = None,
            "teacher" => {
                let id = v
                    .as_str()
                    .filter(|id| !id.is_empty() && id.len() <= 100)
                    .ok_or_else(|| type_error(&field, "a model id", v))?;
                hp.teacher = Some(id.to_string());
            }
            "distillation_temperature" => {
                hp.distillation_temperature = float(&field, v, 0.1, 100.0)?
            }
            "distillation_alpha" => hp.distillation_alpha = float(&field, v, 0.0, 1.0)?,
            "early_stopping" => {
                hp.early_stopping = early_stopping(v, Task::Text).map_err(|mut e| {
                    e.field = format!("hyperparameters.{}", e.field);
                    e
                })?
            }
            _ => unreachable!("apply_keys allows only ALLOWED"),
        }
        Ok(())
    })?;
    if hp.n_embd % hp.n_head != 0 {
        return Err(ValidationError::new(
            "hyperparameters.n_embd",
            format!(
                "must be divisible by n_head ({}); got {}",
                hp.n_head, hp.n_embd
            ),
        ));
    }
    match (hp.loss, &hp.teacher) {
        (LmLoss::Distillation, None) => {
            return Err(ValidationError::new(
                "hyperparameters.teacher",
                "required with loss 'distillation': the id of a trained transformer_lm model",
            ));
        }
        (LmLoss::CrossEntropy, Some(_)) => {
            return Err(ValidationError::new(
                "hyperparameters.teacher",
                "only used with loss 'distillation'",
            ));
        }
        _ => {}
    }
    if hp.min_lr > hp.learning_rate {
        return Err(ValidationError::new(
            "hyperparameters.min_lr",
            format!("must not exceed learning_rate ({})", hp.learning_rate),
        ));
    }
    check_target(&hp, target)?;
    Ok(hp)
}

/// The classifier's own keys; false for any other key.
fn set_classifier_key(
    hp: &mut LmHyperparameters,
    key: &str,
    v: &Value,
    field: &str,
) -> Result<bool, ValidationError> {
    match key {
        "pooling" => {
            hp.pooling = match choice(field, v, &["mean", "last"])? {
                "last" => Pooling::Last,
                _ => Pooling::Mean,
            }
        }
        "class_weights" => {
            hp.class_weights = match v {
                Value::Null => None,
                Value::String(s) if s == "balanced" => Some(ClassWeights::Balanced),
                Value::Array(items) => Some(ClassWeights::Given(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, w)| float(&format!("{field}[{i}]"), w, 0.0, 1e6))
                        .collect::<Result<_, _>>()?,
                )),
                other => {
                    return Err(type_error(
                        field,
                        "\"balanced\" or a weight per class",
                        other,
                    ));
                }
            }
        }
        "init_from" if v.is_null() => hp.init_from = None,
        "init_from" => {
            let id = v
                .as_str()
                .filter(|id| !id.is_empty() && id.len() <= 100)
                .ok_or_else(|| type_error(field, "a model id", v))?;
            hp.init_from = Some(id.to_string());
        }
        "freeze" => {
            let items = v
                .as_array()
                .ok_or_else(|| type_error(field, "a list of parts", v))?;
            hp.freeze = items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| type_error(field, "a list of parts (strings)", v))?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Every part named in `freeze` exists in a network of `n_layer` blocks.
pub fn check_freeze(freeze: &[String], n_layer: usize) -> Result<(), ValidationError> {
    let parts = freezable(n_layer);
    match freeze.iter().find(|p| !parts.contains(p)) {
        Some(unknown) => Err(ValidationError::new(
            "hyperparameters.freeze",
            format!("unknown part '{unknown}'; parts are {}", parts.join(", ")),
        )),
        None => Ok(()),
    }
}

/// Bounds that depend on what the model learns from.
fn check_target(hp: &LmHyperparameters, target: Target) -> Result<(), ValidationError> {
    match target {
        Target::Corpus { chars } => {
            let classifier_only = [
                ("class_weights", hp.class_weights.is_some()),
                ("init_from", hp.init_from.is_some()),
                ("freeze", !hp.freeze.is_empty()),
            ];
            if let Some((key, _)) = classifier_only.iter().find(|(_, set)| *set) {
                return Err(ValidationError::new(
                    format!("hyperparameters.{key}"),
                    "applies to transformer_classifier only",
                ));
            }
            let validation_chars = chars / 10;
            if hp.block_size >= validation_chars {
                return Err(ValidationError::new(
                    "hyperparameters.block_size",
                    format!(
                        "must be shorter than the validation split ({validation_chars} characters of {chars})"
                    ),
                ));
            }
        }
        Target::Labels { classes } => {
            if hp.loss == LmLoss::Distillation {
                return Err(ValidationError::new(
                    "hyperparameters.loss",
                    "a classifier trains with cross_entropy",
                ));
            }
            if let Some(ClassWeights::Given(weights)) = &hp.class_weights
                && weights.len() != classes
            {
                return Err(ValidationError::new(
                    "hyperparameters.class_weights",
                    format!(
                        "needs one weight per class ({classes}), got {}",
                        weights.len()
                    ),
                ));
            }
            // Starting from a language model, the parts are its own: checked against its
            // file (`check_freeze`, through the family's dependency check).
            if hp.init_from.is_none() {
                check_freeze(&hp.freeze, hp.n_layer)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CORPUS: Target = Target::Corpus { chars: 100_000 };

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_classifier_has_defaults_of_its_own_and_takes_the_users_over_them() {
        let labels = Target::Labels { classes: 3 };
        let hp = resolve(&map(json!({})), labels).unwrap();
        assert_eq!(hp.tokenizer, TokenizerKind::Bpe);
        assert_eq!((hp.n_layer, hp.batch_size, hp.max_steps), (2, 32, 1000));
        let hp = resolve(&map(json!({"tokenizer": "char", "n_layer": 3})), labels).unwrap();
        assert_eq!((hp.tokenizer, hp.n_layer), (TokenizerKind::Char, 3));
        let lm = resolve(&map(json!({})), CORPUS).unwrap();
        assert_eq!((lm.tokenizer, lm.n_layer), (TokenizerKind::Char, 4));
    }

    #[test]
    fn defaults_fill_in_and_bad_values_name_their_field() {
        let hp = resolve(&map(json!({"max_steps": 50})), CORPUS).unwrap();
        assert_eq!((hp.max_steps, hp.n_embd, hp.block_size), (50, 128, 64));
        for (bad, field) in [
            (
                json!({"n_embd": 130, "n_head": 4}),
                "hyperparameters.n_embd",
            ),
            (json!({"block_size": 20_000}), "hyperparameters.block_size"),
            (json!({"n_layer": 0}), "hyperparameters.n_layer"),
            (
                json!({"learning_rate": "fast"}),
                "hyperparameters.learning_rate",
            ),
            (json!({"min_lr": 0.5}), "hyperparameters.min_lr"),
            (json!({"dropout": 1.0}), "hyperparameters.dropout"),
            (
                json!({"attention_dropout": -0.1}),
                "hyperparameters.attention_dropout",
            ),
            (
                json!({"lr_schedule": "linear"}),
                "hyperparameters.lr_schedule",
            ),
            (
                json!({"early_stopping": {"patience": 0}}),
                "hyperparameters.early_stopping.patience",
            ),
            (
                json!({"early_stopping": {"monitor": "val_accuracy"}}),
                "hyperparameters.early_stopping.monitor",
            ),
            (
                json!({"grad_accumulation": 0}),
                "hyperparameters.grad_accumulation",
            ),
            (json!({"loss": "focal"}), "hyperparameters.loss"),
            (json!({"loss": "distillation"}), "hyperparameters.teacher"),
            (json!({"teacher": "m1"}), "hyperparameters.teacher"),
            (
                json!({"label_smoothing": 0.9}),
                "hyperparameters.label_smoothing",
            ),
            (
                json!({"tokenizer": "wordpiece"}),
                "hyperparameters.tokenizer",
            ),
            (
                json!({"tokenizer": "bpe", "vocab_size": 100}),
                "hyperparameters.vocab_size",
            ),
            (json!({"freeze": ["embeddings"]}), "hyperparameters.freeze"),
            (json!({"epochs": 3}), "epochs"),
        ] {
            let err = resolve(&map(bad.clone()), CORPUS).unwrap_err();
            assert_eq!(err.field, field, "{bad}: {err:?}");
        }
    }
}
