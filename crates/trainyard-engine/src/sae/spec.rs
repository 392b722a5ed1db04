//! `sparse_autoencoder` hyperparameters: defaults (SAELens-like for a small model), bounds,
//! and errors that name the field.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use trainyard_core::ValidationError;
use trainyard_core::hyperparameters::{apply_keys, choice, float, type_error, uint};

use super::model::{ARCHITECTURES, Architecture};
use crate::language::Site;

const ALLOWED: [&str; 28] = [
    "source_model",
    "layers",
    "site",
    "n_tokens",
    "architecture",
    "expansion_factor",
    "d_sae",
    "k",
    "l1_coefficient",
    "l1_warmup_steps",
    "target_l0",
    "decoder_norm",
    "decoder_bias_init",
    "normalize_activations",
    "learning_rate",
    "warmup_steps",
    "lr_decay_steps",
    "grad_clip",
    "batch_size",
    "max_steps",
    "total_tokens",
    "log_interval",
    "dead_window_tokens",
    "resample_dead",
    "resample_interval",
    "aux_k",
    "aux_coefficient",
    "seed",
];

/// How the decoder's directions are kept from growing to dodge the sparsity penalty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderNorm {
    /// Unit norm after every step, with the gradient's parallel component removed first.
    Unit,
    /// Free norms; the L1 penalty is weighted by each latent's decoder norm.
    Penalty,
}

/// Where the decoder bias starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BiasInit {
    Mean,
    GeometricMedian,
    Zeros,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeHyperparameters {
    /// The trained `transformer_lm` whose activations are learned.
    pub source_model: Option<String>,
    /// Layers (0-based blocks) to train one SAE each on; empty picks the middle layer.
    pub layers: Vec<usize>,
    pub site: Site,
    /// Tokens of activations extracted from the corpus's training split.
    pub n_tokens: usize,
    pub architecture: Architecture,
    pub expansion_factor: usize,
    pub d_sae: Option<usize>,
    pub k: usize,
    pub l1_coefficient: f64,
    pub l1_warmup_steps: u64,
    pub target_l0: Option<f64>,
    pub decoder_norm: DecoderNorm,
    pub decoder_bias_init: BiasInit,
    pub normalize_activations: bool,
    pub learning_rate: f64,
    pub warmup_steps: u64,
    /// The learning rate falls linearly to zero over the last this many steps.
    pub lr_decay_steps: u64,
    pub grad_clip: f64,
    /// Tokens per step.
    pub batch_size: usize,
    pub max_steps: u64,
    pub log_interval: u64,
    pub dead_window_tokens: u64,
    pub resample_dead: bool,
    pub resample_interval: u64,
    /// Dead latents AuxK uses per token; 0 means half the input width.
    pub aux_k: usize,
    pub aux_coefficient: f64,
    pub seed: u64,
}

impl Default for SaeHyperparameters {
    fn default() -> Self {
        SaeHyperparameters {
            source_model: None,
            layers: vec![],
            site: Site::ResidPost,
            n_tokens: 262_144,
            architecture: Architecture::Topk,
            expansion_factor: 8,
            d_sae: None,
            k: 32,
            l1_coefficient: 5.0,
            l1_warmup_steps: 100,
            target_l0: None,
            decoder_norm: DecoderNorm::Unit,
            decoder_bias_init: BiasInit::Mean,
            normalize_activations: true,
            learning_rate: 4e-4,
            warmup_steps: 50,
            lr_decay_steps: 400,
            grad_clip: 1.0,
            batch_size: 1024,
            max_steps: 2000,
            log_interval: 100,
            dead_window_tokens: 250_000,
            resample_dead: false,
            resample_interval: 500,
            aux_k: 0,
            aux_coefficient: 1.0 / 32.0,
            seed: 42,
        }
    }
}

impl SaeHyperparameters {
    pub fn d_sae(&self, d_in: usize) -> usize {
        self.d_sae.unwrap_or(d_in * self.expansion_factor)
    }

    pub fn aux_k(&self, d_in: usize) -> usize {
        if self.aux_k == 0 {
            d_in / 2
        } else {
            self.aux_k
        }
    }

    /// Warm-up, constant, then a linear decay to zero over the last `lr_decay_steps`.
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_start = self.max_steps.saturating_sub(self.lr_decay_steps);
        if self.lr_decay_steps > 0 && step >= decay_start {
            let left = self.max_steps.saturating_sub(step) as f64;
            return self.learning_rate * left / self.lr_decay_steps as f64;
        }
        self.learning_rate
    }
}

/// The user's hyperparameters over the defaults. `decoder_norm` follows the architecture
/// unless given: ReLU SAEs weight their penalty by decoder norms, TopK ones keep unit norms.
pub fn resolve(user: &Map<String, Value>) -> Result<SaeHyperparameters, ValidationError> {
    let mut hp = SaeHyperparameters::default();
    let mut total_tokens = None;
    apply_keys(user, "sparse_autoencoder", &ALLOWED, |key, v| {
        let field = format!("hyperparameters.{key}");
        let int = |min, max| uint(&field, v, min, max);
        let flag = || {
            v.as_bool()
                .ok_or_else(|| type_error(&field, "true or false", v))
        };
        if v.is_null() {
            return match key {
                "source_model" | "d_sae" | "target_l0" | "total_tokens" => Ok(()),
                _ => Err(type_error(&field, "a value", v)),
            };
        }
        match key {
            "source_model" => {
                hp.source_model = Some(
                    v.as_str()
                        .ok_or_else(|| type_error(&field, "a model id", v))?
                        .to_string(),
                )
            }
            "layers" => hp.layers = layers(&field, v)?,
            "site" => hp.site = Site::parse(choice(&field, v, &Site::NAMES)?),
            "n_tokens" => hp.n_tokens = int(256, 50_000_000)? as usize,
            "architecture" => {
                hp.architecture = match choice(&field, v, &ARCHITECTURES)? {
                    "relu" => Architecture::Relu,
                    "topk" => Architecture::Topk,
                    _ => Architecture::BatchTopk,
                }
            }
            "expansion_factor" => hp.expansion_factor = int(1, 256)? as usize,
            "d_sae" => hp.d_sae = Some(int(1, 1 << 20)? as usize),
            "k" => hp.k = int(1, 1 << 20)? as usize,
            "l1_coefficient" => hp.l1_coefficient = float(&field, v, 0.0, 1e6)?,
            "l1_warmup_steps" => hp.l1_warmup_steps = int(0, 100_000_000)?,
            "target_l0" => hp.target_l0 = Some(float(&field, v, 0.1, 1e6)?),
            "decoder_norm" => {
                hp.decoder_norm = match choice(&field, v, &["unit", "penalty"])? {
                    "unit" => DecoderNorm::Unit,
                    _ => DecoderNorm::Penalty,
                }
            }
            "decoder_bias_init" => {
                hp.decoder_bias_init =
                    match choice(&field, v, &["mean", "geometric_median", "zeros"])? {
                        "mean" => BiasInit::Mean,
                        "geometric_median" => BiasInit::GeometricMedian,
                        _ => BiasInit::Zeros,
                    }
            }
            "normalize_activations" => hp.normalize_activations = flag()?,
            "learning_rate" => hp.learning_rate = float(&field, v, 1e-8, 1.0)?,
            "warmup_steps" => hp.warmup_steps = int(0, 100_000_000)?,
            "lr_decay_steps" => hp.lr_decay_steps = int(0, 100_000_000)?,
            "grad_clip" => hp.grad_clip = float(&field, v, 0.0, 1e6)?,
            "batch_size" => hp.batch_size = int(1, 65_536)? as usize,
            "max_steps" => hp.max_steps = int(1, 100_000_000)?,
            "total_tokens" => total_tokens = Some(int(1, 100_000_000_000)?),
            "log_interval" => hp.log_interval = int(1, 100_000_000)?,
            "dead_window_tokens" => hp.dead_window_tokens = int(1, 100_000_000_000)?,
            "resample_dead" => hp.resample_dead = flag()?,
            "resample_interval" => hp.resample_interval = int(1, 100_000_000)?,
            "aux_k" => hp.aux_k = int(0, 1 << 20)? as usize,
            "aux_coefficient" => hp.aux_coefficient = float(&field, v, 0.0, 1e3)?,
            "seed" => hp.seed = int(0, u64::MAX)?,
            _ => unreachable!("apply_keys admits only allowed keys"),
        }
        Ok(())
    })?;
    if let Some(tokens) = total_tokens {
        if user.get("max_steps").is_some_and(|v| !v.is_null()) {
            return Err(ValidationError::new(
                "hyperparameters.total_tokens",
                "give total_tokens or max_steps, not both",
            ));
        }
        hp.max_steps = tokens.div_ceil(hp.batch_size as u64);
    }
    if !user.contains_key("decoder_norm") && hp.architecture == Architecture::Relu {
        hp.decoder_norm = DecoderNorm::Penalty;
    }
    if hp.target_l0.is_some() && hp.architecture != Architecture::Relu {
        return Err(ValidationError::new(
            "hyperparameters.target_l0",
            "only relu SAEs adapt their L1 coefficient; topk and batch_topk fix L0 with k",
        ));
    }
    if let Some(d_sae) = hp.d_sae
        && hp.architecture != Architecture::Relu
        && hp.k > d_sae
    {
        return Err(ValidationError::new(
            "hyperparameters.k",
            format!("k = {} is more than d_sae = {d_sae} latents", hp.k),
        ));
    }
    Ok(hp)
}

fn layers(field: &str, v: &Value) -> Result<Vec<usize>, ValidationError> {
    let items = v
        .as_array()
        .ok_or_else(|| type_error(field, "a list of layer numbers", v))?;
    if items.len() > 64 {
        return Err(ValidationError::new(field, "at most 64 layers per job"));
    }
    let mut layers = Vec::with_capacity(items.len());
    for item in items {
        let layer = uint(field, item, 0, 4096)? as usize;
        if layers.contains(&layer) {
            return Err(ValidationError::new(
                field,
                format!("layer {layer} is listed twice"),
            ));
        }
        layers.push(layer);
    }
    Ok(layers)
}

/// Checks what needs the source model: layers in range, `k` within the latents.
pub fn check_against_source(
    hp: &SaeHyperparameters,
    n_layer: usize,
    n_embd: usize,
) -> Result<(), ValidationError> {
    if let Some(layer) = hp.layers.iter().find(|&&l| l >= n_layer) {
        return Err(ValidationError::new(
            "hyperparameters.layers",
            format!(
                "layer {layer} is out of range: the source model has {n_layer} layers (0 to {})",
                n_layer - 1
            ),
        ));
    }
    let d_sae = hp.d_sae(n_embd);
    if hp.architecture != Architecture::Relu && hp.k > d_sae {
        return Err(ValidationError::new(
            "hyperparameters.k",
            format!("k = {} is more than d_sae = {d_sae} latents", hp.k),
        ));
    }
    Ok(())
}
