//! A trained transformer's weights as plain `f32` arrays under documented names: what the
//! key-value-cached decoder runs on and what the export bundle's `model.safetensors` holds.
//!
//! Names and shapes (row-major; a linear layer computes `y = x @ weight + bias`):
//!
//! | name | shape |
//! |---|---|
//! | `wte.weight` | `[vocab_size, n_embd]` token embedding, also the output head: `logits = ln_f(x) @ wte.weight.T` |
//! | `wpe.weight` | `[block_size, n_embd]` position embedding |
//! | `h.{i}.ln_1.weight`, `.bias` | `[n_embd]` layer norm before attention (eps 1e-5) |
//! | `h.{i}.attn.{q,k,v,proj}.weight` | `[n_embd, n_embd]` |
//! | `h.{i}.attn.{q,k,v,proj}.bias` | `[n_embd]` |
//! | `h.{i}.ln_2.weight`, `.bias` | `[n_embd]` layer norm before the MLP |
//! | `h.{i}.mlp.fc.weight`, `.bias` | `[n_embd, 4 n_embd]`, `[4 n_embd]`, then exact (erf) GELU |
//! | `h.{i}.mlp.proj.weight`, `.bias` | `[4 n_embd, n_embd]`, `[n_embd]` |
//! | `ln_f.weight`, `.bias` | `[n_embd]` final layer norm |
//!
//! Biases are absent when the model was trained with `bias: false`.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};

use super::model::{Gpt, GptConfig};

/// A tensor's name, shape and values.
pub type Named<'a> = (String, Vec<usize>, &'a [f32]);

/// The layer norms' epsilon (burn's and PyTorch's default).
pub const LAYER_NORM_EPSILON: f32 = 1e-5;

#[derive(Debug, Clone)]
pub struct Dense {
    pub d_in: usize,
    pub d_out: usize,
    /// `[d_in, d_out]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub ln_1: Norm,
    pub q: Dense,
    pub k: Dense,
    pub v: Dense,
    pub proj: Dense,
    pub ln_2: Norm,
    pub fc: Dense,
    pub mlp_proj: Dense,
}

#[derive(Debug, Clone)]
pub struct GptWeights {
    pub config: GptConfig,
    /// `[vocab_size, n_embd]`.
    pub wte: Vec<f32>,
    /// `[block_size, n_embd]`.
    pub wpe: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    pub ln_f: Norm,
}

fn values<const D: usize>(param: &Param<Tensor<D>>) -> Vec<f32> {
    param
        .val()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float parameters convert to f32")
}

/// A linear layer's weights as plain arrays.
pub fn dense(linear: &Linear) -> Dense {
    let [d_in, d_out] = linear.weight.val().dims();
    Dense {
        d_in,
        d_out,
        weight: values(&linear.weight),
        bias: linear.bias.as_ref().map(values),
    }
}

fn norm(layer_norm: &LayerNorm) -> Norm {
    Norm {
        weight: values(&layer_norm.gamma),
        bias: layer_norm.beta.as_ref().map(values),
    }
}

impl GptWeights {
    pub fn from_model(model: &Gpt, config: &GptConfig) -> Self {
        let layers = model
            .blocks
            .iter()
            .map(|block| LayerWeights {
                ln_1: norm(&block.ln_attention),
                q: dense(&block.attention.query),
                k: dense(&block.attention.key),
                v: dense(&block.attention.value),
                proj: dense(&block.attention.output),
                ln_2: norm(&block.ln_mlp),
                fc: dense(&block.expand),
                mlp_proj: dense(&block.project),
            })
            .collect();
        GptWeights {
            config: config.clone(),
            wte: values(&model.tokens.weight),
            wpe: values(&model.positions.weight),
            layers,
            ln_f: norm(&model.ln_final),
        }
    }

    /// A freshly initialised network's weights (for measuring speed).
    pub fn initialised(config: &GptConfig) -> Self {
        let model = Gpt::new(config, &burn::tensor::Device::flex());
        GptWeights::from_model(&model, config)
    }

    /// Every tensor under its documented name, with its shape.
    pub fn named(&self) -> Vec<Named<'_>> {
        let (v, t, e) = (
            self.config.vocab_size,
            self.config.block_size,
            self.config.n_embd,
        );
        let mut out: Vec<Named<'_>> = vec![
            ("wte.weight".into(), vec![v, e], &self.wte),
            ("wpe.weight".into(), vec![t, e], &self.wpe),
        ];
        fn push_norm<'a>(out: &mut Vec<Named<'a>>, name: String, n: &'a Norm) {
            let e = n.weight.len();
            out.push((format!("{name}.weight"), vec![e], &n.weight[..]));
            if let Some(bias) = &n.bias {
                out.push((format!("{name}.bias"), vec![e], &bias[..]));
            }
        }
        for (i, layer) in self.layers.iter().enumerate() {
            push_norm(&mut out, format!("h.{i}.ln_1"), &layer.ln_1);
            for (part, d) in [
                ("attn.q", &layer.q),
                ("attn.k", &layer.k),
                ("attn.v", &layer.v),
                ("attn.proj", &layer.proj),
                ("mlp.fc", &layer.fc),
                ("mlp.proj", &layer.mlp_proj),
            ] {
                out.push((
                    format!("h.{i}.{part}.weight"),
                    vec![d.d_in, d.d_out],
                    &d.weight,
                ));
                if let Some(bias) = &d.bias {
                    out.push((format!("h.{i}.{part}.bias"), vec![d.d_out], bias));
                }
            }
            push_norm(&mut out, format!("h.{i}.ln_2"), &layer.ln_2);
        }
        push_norm(&mut out, "ln_f".into(), &self.ln_f);
        out
    }

    /// The weights as a safetensors file (little-endian f32), with the config as metadata.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, String> {
        self.to_safetensors_with(vec![])
    }

    /// [`GptWeights::to_safetensors`] with further tensors (a classifier's head).
    pub fn to_safetensors_with(&self, extra: Vec<Named<'_>>) -> Result<Vec<u8>, String> {
        let mut named = self.named();
        named.extend(extra);
        safetensors_file(named)
    }
}

/// Named `f32` tensors as a safetensors file (little-endian, `format: pt` metadata).
pub fn safetensors_file(named: Vec<Named<'_>>) -> Result<Vec<u8>, String> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .into_iter()
        .map(|(name, shape, data)| {
            let raw = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, shape, raw)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, raw)| {
            TensorView::new(Dtype::F32, shape.clone(), raw)
                .map(|view| (name.clone(), view))
                .map_err(|e| format!("{name}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata.into_iter().collect())).map_err(|e| e.to_string())
}

impl GptWeights {
    /// A burn network holding these weights (the inverse of [`GptWeights::from_model`]).
    pub fn to_model(&self, device: &Device) -> Gpt {
        // Parameters initialise lazily, and every one is replaced before it is read, so the
        // shared generator is not drawn from; the lock covers any eager draw all the same.
        let mut model = {
            let _guard = crate::neural::init_lock();
            Gpt::new(&self.config, device)
        };
        let d = device;
        set_matrix(&mut model.tokens.weight, &self.wte, self.config.n_embd, d);
        set_matrix(
            &mut model.positions.weight,
            &self.wpe,
            self.config.n_embd,
            d,
        );
        for (block, layer) in model.blocks.iter_mut().zip(&self.layers) {
            set_norm(&mut block.ln_attention, &layer.ln_1, d);
            set_dense(&mut block.attention.query, &layer.q, d);
            set_dense(&mut block.attention.key, &layer.k, d);
            set_dense(&mut block.attention.value, &layer.v, d);
            set_dense(&mut block.attention.output, &layer.proj, d);
            set_norm(&mut block.ln_mlp, &layer.ln_2, d);
            set_dense(&mut block.expand, &layer.fc, d);
            set_dense(&mut block.project, &layer.mlp_proj, d);
        }
        set_norm(&mut model.ln_final, &self.ln_f, d);
        model
    }
}

fn set_matrix(param: &mut Param<Tensor<2>>, values: &[f32], cols: usize, device: &Device) {
    let shape = [values.len() / cols, cols];
    *param = Param::from_data(TensorData::new(values.to_vec(), shape), device);
}

fn set_vector(param: &mut Param<Tensor<1>>, values: &[f32], device: &Device) {
    *param = Param::from_data(TensorData::new(values.to_vec(), [values.len()]), device);
}

fn set_dense(linear: &mut Linear, dense: &Dense, device: &Device) {
    set_matrix(&mut linear.weight, &dense.weight, dense.d_out, device);
    if let (Some(param), Some(bias)) = (linear.bias.as_mut(), dense.bias.as_ref()) {
        set_vector(param, bias, device);
    }
}

fn set_norm(layer_norm: &mut LayerNorm, norm: &Norm, device: &Device) {
    set_vector(&mut layer_norm.gamma, &norm.weight, device);
    if let (Some(param), Some(bias)) = (layer_norm.beta.as_mut(), norm.bias.as_ref()) {
        set_vector(param, bias, device);
    }
}
