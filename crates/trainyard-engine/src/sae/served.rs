//! A trained autoencoder, served: its features (statistics, top contexts, the tokens each
//! decoder direction promotes), text encoded through the source model, and an export in the
//! layout SAELens loads.

use serde_json::{Value, json};

use super::codec::read_sae;
use super::extract::{Source, activations};
use super::family::{MODEL_MAGIC, ModelHeader};
use super::features::LayerFeatures;
use super::model::{Architecture, Sae};
use crate::PredictError;
use crate::container::read_sections;
use crate::container::read_u32s;
use crate::family::{BundleFile, ExportInfo, FeatureQuery, FeatureSort, Served};
use crate::language::weights::safetensors_file;

/// Characters of context shown on each side of an activating token, at most.
const CONTEXT_TOKENS: usize = 24;
/// Tokens listed as a feature's promoted ones.
const PROMOTED: usize = 10;

pub struct ServedSae {
    header: ModelHeader,
    /// The language model the activations came from; none for an uploaded matrix.
    source: Option<Source>,
    /// The source model's token embedding (its tied unembedding), `[vocab, d]`, read once.
    unembedding: Vec<f32>,
    windows: Vec<u32>,
    layers: Vec<(Sae, LayerFeatures)>,
}

fn artifact(e: impl ToString) -> PredictError {
    PredictError::Artifact(e.to_string())
}

impl ServedSae {
    pub fn decode(bytes: &[u8]) -> Result<ServedSae, PredictError> {
        let sections = read_sections(MODEL_MAGIC, "sparse autoencoder", bytes)?;
        let header: ModelHeader = serde_json::from_slice(sections[0]).map_err(artifact)?;
        if sections.len() != 3 + 5 * header.layers.len() {
            return Err(artifact("an autoencoder model has five sections per layer"));
        }
        let source = if sections[1].is_empty() {
            None
        } else {
            Some(Source::decode(sections[1])?)
        };
        let mut layers = vec![];
        for (i, summary) in header.layers.iter().enumerate() {
            let own = &sections[3 + 5 * i..][..5];
            let sae = read_sae(&summary.shape, &own[..4]).map_err(artifact)?;
            let features: LayerFeatures = serde_json::from_slice(own[4]).map_err(artifact)?;
            layers.push((sae, features));
        }
        let unembedding = source.as_ref().map_or_else(Vec::new, |s| {
            s.model
                .token_embedding()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap_or_default()
        });
        Ok(ServedSae {
            windows: read_u32s(sections[2]),
            source,
            unembedding,
            header,
            layers,
        })
    }

    /// The index of `layer` among the trained ones (the first when not given).
    fn layer_index(&self, layer: Option<usize>) -> Result<usize, PredictError> {
        let Some(layer) = layer else {
            return Ok(0);
        };
        self.header
            .layers
            .iter()
            .position(|l| l.layer == layer)
            .ok_or_else(|| PredictError::Invalid {
                field: "layer".into(),
                message: format!(
                    "this model has autoencoders for layers {:?}, not {layer}",
                    self.trained_layers()
                ),
            })
    }

    fn trained_layers(&self) -> Vec<usize> {
        self.header.layers.iter().map(|l| l.layer).collect()
    }

    fn architecture(&self) -> (Architecture, usize) {
        (
            self.header.hyperparameters.architecture,
            self.header.hyperparameters.k,
        )
    }

    fn summary(&self, index: usize, latent: usize) -> Value {
        let (sae, features) = &self.layers[index];
        let d = sae.d_in;
        let norm = sae.w_dec[latent * d..][..d]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt();
        json!({
            "index": latent,
            "frequency": features.frequency[latent],
            "max_activation": features.max_activation[latent],
            "decoder_norm": norm,
        })
    }

    fn page(&self, query: &FeatureQuery) -> Result<Value, PredictError> {
        let index = self.layer_index(query.layer)?;
        let features = &self.layers[index].1;
        let mut order: Vec<usize> = (0..features.frequency.len()).collect();
        let key = |values: &[f32]| {
            let values = values.to_vec();
            move |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b))
        };
        match query.sort {
            FeatureSort::Index => {}
            FeatureSort::Frequency => order.sort_by(key(&features.frequency)),
            FeatureSort::MaxActivation => order.sort_by(key(&features.max_activation)),
        }
        let items: Vec<Value> = order
            .iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|&j| self.summary(index, j))
            .collect();
        let dead = features.frequency.iter().filter(|&&f| f == 0.0).count();
        Ok(json!({
            "layer": self.header.layers[index].layer,
            "total": order.len(),
            "dead": dead,
            "limit": query.limit,
            "offset": query.offset,
            "items": items,
        }))
    }

    fn detail(&self, layer: Option<usize>, latent: usize) -> Result<Value, PredictError> {
        let index = self.layer_index(layer)?;
        let (sae, features) = &self.layers[index];
        if latent >= sae.d_sae {
            return Err(PredictError::NotFound(latent.to_string()));
        }
        let mut out = self.summary(index, latent);
        out["layer"] = json!(self.header.layers[index].layer);
        let Some(source) = &self.source else {
            // An uploaded matrix: the rows that activate it most, by index.
            let rows: Vec<Value> = features.top[latent]
                .iter()
                .map(|&(row, activation)| json!({"row": row, "activation": activation}))
                .collect();
            out["top_rows"] = json!(rows);
            return Ok(out);
        };
        let contexts: Vec<Value> = features.top[latent]
            .iter()
            .map(|&(row, activation)| self.context(source, row as usize, activation))
            .collect();
        out["top_contexts"] = json!(contexts);
        out["promoted_tokens"] = json!(promoted(source, &self.unembedding, sae, latent));
        Ok(out)
    }

    /// The text around training token `row`, split at the token.
    fn context(&self, source: &Source, row: usize, activation: f32) -> Value {
        let block = source.config.block_size;
        let (window, offset) = (row / block, row % block);
        let tokens = &self.windows[window * block..][..block];
        let start = offset.saturating_sub(CONTEXT_TOKENS);
        let end = (offset + 1 + CONTEXT_TOKENS / 3).min(block);
        let decode = |t: &[u32]| source.tokenizer.decode(t);
        json!({
            "before": decode(&tokens[start..offset]),
            "token": decode(&tokens[offset..offset + 1]),
            "after": decode(&tokens[offset + 1..end]),
            "activation": activation,
        })
    }

    /// Per token of `text` (the last `block_size` when longer), its `top` strongest latents.
    fn tokens_to_features(
        &self,
        text: &str,
        layer: Option<usize>,
        top: usize,
    ) -> Result<Value, PredictError> {
        let Some(source) = &self.source else {
            return Err(PredictError::Unsupported(
                "this autoencoder learned an uploaded activation matrix, not a language model's \
                 activations: POST /api/models/{id}/predict with rows of activations"
                    .into(),
            ));
        };
        let index = self.layer_index(layer)?;
        let summary = &self.header.layers[index];
        let (sae, _) = &self.layers[index];
        let mut tokens = source.tokenizer.encode(text);
        if tokens.is_empty() {
            return Err(PredictError::Invalid {
                field: "text".into(),
                message: "empty: give at least one character".into(),
            });
        }
        let block = source.config.block_size;
        let truncated = tokens.len() > block;
        if truncated {
            tokens.drain(..tokens.len() - block);
        }
        let n = tokens.len();
        // The model reads whole windows; pad after the text (attention is causal, so the
        // padding cannot change the text's activations).
        let mut window = tokens.clone();
        window.resize(block, 0);
        let site = self.header.hyperparameters.site;
        let values = activations(source, &window, &[summary.layer], site).remove(0);
        let d = sae.d_in;
        let scaled: Vec<f32> = values[..n * d].iter().map(|v| v * summary.scale).collect();
        let (architecture, k) = self.architecture();
        let codes = sae.encode(&scaled, architecture, k);
        let per_token: Vec<Value> = codes
            .rows
            .iter()
            .zip(&tokens)
            .map(|(row, &token)| {
                let mut active = row.clone();
                active.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                active.truncate(top);
                json!({
                    "token": source.tokenizer.decode(&[token]),
                    "active": row.len(),
                    "features": active.iter().map(|&(j, v)| json!({"index": j, "activation": v})).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(json!({
            "layer": summary.layer,
            "truncated": truncated,
            "tokens": per_token,
        }))
    }

    /// SAELens's layout, one folder per layer: `cfg.json` and `sae_weights.safetensors` with
    /// `W_enc [d_in, d_sae]`, `b_enc`, `W_dec [d_sae, d_in]`, `b_dec`.
    fn files(&self, about: &ExportInfo) -> Result<Vec<BundleFile>, PredictError> {
        let hp = &self.header.hyperparameters;
        let mut files = vec![];
        for ((sae, _), summary) in self.layers.iter().zip(&self.header.layers) {
            let (d, m) = (sae.d_in, sae.d_sae);
            let w_enc_t: Vec<f32> = (0..d)
                .flat_map(|i| (0..m).map(move |j| (i, j)))
                .map(|(i, j)| sae.w_enc[j * d + i])
                .collect();
            let weights = safetensors_file(vec![
                ("W_enc".into(), vec![d, m], &w_enc_t),
                ("b_enc".into(), vec![m], &sae.b_enc),
                ("W_dec".into(), vec![m, d], &sae.w_dec),
                ("b_dec".into(), vec![d], &sae.b_dec),
            ])
            .map_err(artifact)?;
            let (architecture, activation) = match hp.architecture {
                Architecture::Relu => ("standard", json!({"activation_fn_str": "relu"})),
                Architecture::Topk => ("topk", json!({"activation_fn_str": "topk", "k": hp.k})),
                Architecture::BatchTopk => (
                    "jumprelu",
                    json!({"activation_fn_str": "relu", "threshold": sae.threshold}),
                ),
            };
            let cfg = json!({
                "architecture": architecture,
                "d_in": d,
                "d_sae": m,
                "activation_fn_str": activation["activation_fn_str"],
                "activation_fn_kwargs": activation,
                "apply_b_dec_to_input": true,
                "normalize_activations": if hp.normalize_activations { "constant_scalar" } else { "none" },
                "activation_scale": summary.scale,
                "hook_name": format!("blocks.{}.hook_{}", summary.layer, hp.site.name()),
                "hook_layer": summary.layer,
                "dtype": "float32",
                "model_name": hp.source_model,
                "trainyard_model_id": about.model_id,
                "dataset_path": about.dataset,
                "metrics": summary.metrics,
            });
            let folder = format!("layer_{}", summary.layer);
            files.push(BundleFile {
                name: format!("{folder}/sae_weights.safetensors"),
                bytes: weights,
            });
            files.push(BundleFile {
                name: format!("{folder}/cfg.json"),
                bytes: serde_json::to_vec_pretty(&cfg).expect("cfg serialises"),
            });
        }
        Ok(files)
    }
}

/// Tokens whose output embedding the decoder direction raises most (direct logit
/// attribution through the tied unembedding, ignoring the final norm's scale).
fn promoted(source: &Source, embedding: &[f32], sae: &Sae, latent: usize) -> Vec<Value> {
    let d = sae.d_in;
    let direction = &sae.w_dec[latent * d..][..d];
    let mut scored: Vec<(usize, f32)> = embedding
        .chunks(d)
        .enumerate()
        .map(|(t, row)| (t, super::linalg::dot(row, direction)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
        .iter()
        .take(PROMOTED)
        .map(|&(t, score)| {
            json!({"token": source.tokenizer.decode(&[t as u32]), "id": t, "score": score})
        })
        .collect()
}

impl Served for ServedSae {
    /// Rows of activations (the first layer's width) to their active features, strongest
    /// first.
    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Value>, PredictError> {
        let x = crate::family::check_rows(rows, &self.feature_names())?;
        let (sae, _) = &self.layers[0];
        let scale = self.header.layers[0].scale;
        let scaled: Vec<f32> = x.iter().map(|v| v * scale).collect();
        let (architecture, k) = self.architecture();
        let codes = sae.encode(&scaled, architecture, k);
        let reconstruction = sae.decode(&codes);
        Ok(codes
            .rows
            .iter()
            .zip(reconstruction.chunks(sae.d_in))
            .zip(scaled.chunks(sae.d_in))
            .map(|((row, rebuilt), input)| {
                let mut active = row.clone();
                active.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let error: f32 = rebuilt.iter().zip(input).map(|(r, x)| (r - x).powi(2)).sum();
                json!({
                    "active": active.len(),
                    "features": active.iter().map(|&(j, v)| json!({"index": j, "activation": v})).collect::<Vec<_>>(),
                    "reconstruction_error": error / (scale * scale),
                })
            })
            .collect())
    }

    fn output_columns(&self) -> Vec<String> {
        vec![
            "active".into(),
            "features".into(),
            "reconstruction_error".into(),
        ]
    }

    fn feature_names(&self) -> Vec<String> {
        (0..self.layers[0].0.d_in)
            .map(|j| format!("a{j}"))
            .collect()
    }

    fn export(&self, about: &ExportInfo) -> Result<Vec<BundleFile>, PredictError> {
        self.files(about)
    }

    fn features(&self, query: &FeatureQuery) -> Result<Value, PredictError> {
        self.page(query)
    }

    fn feature(&self, layer: Option<usize>, index: usize) -> Result<Value, PredictError> {
        self.detail(layer, index)
    }

    fn encode_text(
        &self,
        text: &str,
        layer: Option<usize>,
        top: usize,
    ) -> Result<Value, PredictError> {
        self.tokens_to_features(text, layer, top)
    }
}
