//! A language model's export bundle: everything needed to run it without Trainyard.
//! `model.safetensors` (names and shapes in [`super::weights`]), `config.json`,
//! `tokenizer.json` (Hugging Face's format), `metrics.json`, `training_args.json` and a model
//! card, `README.md`.

use std::collections::BTreeMap;

use serde_json::json;
use trainyard_data::tokenizer::{TextTokenizer, TokenizerKind};

use super::LmHyperparameters;
use super::classifier::Pooling;
use super::weights::{Dense, GptWeights, LAYER_NORM_EPSILON, Named};
use crate::PredictError;
use crate::family::{BundleFile, ExportInfo};

pub struct Bundle<'a> {
    pub weights: &'a GptWeights,
    pub tokenizer: &'a TextTokenizer,
    pub hyperparameters: &'a LmHyperparameters,
    pub metrics: &'a BTreeMap<String, f64>,
    pub about: &'a ExportInfo,
    /// A text classifier's head; none for a language model.
    pub head: Option<Head<'a>>,
}

/// A classifier's head: `logits = pool(ln_f(x)) @ head.weight + head.bias`.
pub struct Head<'a> {
    pub dense: &'a Dense,
    pub classes: &'a [String],
    pub pooling: Pooling,
}

fn json_file(name: &str, value: &serde_json::Value) -> BundleFile {
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    bytes.push(b'\n');
    BundleFile {
        name: name.into(),
        bytes,
    }
}

pub fn files(bundle: &Bundle<'_>) -> Result<Vec<BundleFile>, PredictError> {
    let config = &bundle.weights.config;
    let extra: Vec<Named<'_>> = match &bundle.head {
        Some(head) => {
            let d = head.dense;
            let mut tensors: Vec<Named<'_>> =
                vec![("head.weight".into(), vec![d.d_in, d.d_out], &d.weight[..])];
            tensors.extend(
                d.bias
                    .as_deref()
                    .map(|b| ("head.bias".into(), vec![d.d_out], b)),
            );
            tensors
        }
        None => vec![],
    };
    let safetensors = bundle
        .weights
        .to_safetensors_with(extra)
        .map_err(PredictError::Artifact)?;
    let mut config_json = json!({
        "architecture": if bundle.head.is_some() { "gpt-classifier" } else { "gpt" },
        "vocab_size": config.vocab_size,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "block_size": config.block_size,
        "bias": config.bias,
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "activation": "gelu (exact, erf)",
        "norm": "pre-norm",
        "tie_word_embeddings": true,
        "tokenizer": bundle.hyperparameters.tokenizer,
        "dtype": "float32",
    });
    if let Some(head) = &bundle.head {
        config_json["classes"] = json!(head.classes);
        config_json["pooling"] = json!(head.pooling);
        config_json["tie_word_embeddings"] = json!(false);
    }
    let algorithm = if bundle.head.is_some() {
        "transformer_classifier"
    } else {
        "transformer_lm"
    };
    let training_args = json!({
        "algorithm": algorithm,
        "dataset": bundle.about.dataset,
        "hyperparameters": bundle.hyperparameters,
    });
    Ok(vec![
        BundleFile {
            name: "model.safetensors".into(),
            bytes: safetensors,
        },
        json_file("config.json", &config_json),
        json_file("tokenizer.json", &bundle.tokenizer.to_hf_json()),
        json_file("metrics.json", &json!(bundle.metrics)),
        json_file("training_args.json", &training_args),
        BundleFile {
            name: "README.md".into(),
            bytes: model_card(bundle).into_bytes(),
        },
    ])
}

/// Where the built-in corpora come from and under what terms.
fn data_licence(dataset: &str) -> &'static str {
    match dataset {
        "shakespeare" => {
            "The works of William Shakespeare (Andrej Karpathy's tiny-shakespeare selection), \
             in the public domain."
        }
        _ => {
            "An uploaded dataset: its licence is its owner's; check it before redistributing this model."
        }
    }
}

fn model_card(bundle: &Bundle<'_>) -> String {
    let (about, config, hp) = (bundle.about, &bundle.weights.config, bundle.hyperparameters);
    let metrics: String = bundle
        .metrics
        .iter()
        .map(|(name, value)| format!("| {name} | {value:.4} |\n"))
        .collect();
    format!(
        "# {name}\n\n\
         A decoder-only transformer ({tokens}) trained by Trainyard (model `{id}`, run `{run}`).\n\n\
         ## Data\n\n\
         Dataset `{dataset}`: {split} {licence}\n\n\
         ## Architecture\n\n\
         {layers} pre-norm blocks of causal self-attention ({heads} heads) and a GELU MLP, \
         width {embd}, context {block} tokens, vocabulary {vocab} tokens (`tokenizer.json`), \
         learned position embeddings, output head tied to the token embedding, {params} parameters. \
         `config.json` has the shape; tensor names and layouts:\n\n\
         - `wte.weight` [vocab, n_embd]: token embedding and output head (`logits = ln_f(x) @ wte.weight.T`)\n\
         - `wpe.weight` [block_size, n_embd]: position embedding\n\
         - `h.{{i}}.ln_1.*`, `h.{{i}}.ln_2.*`, `ln_f.*`: layer norms (eps 1e-5), `weight` and `bias`\n\
         - `h.{{i}}.attn.{{q,k,v,proj}}.weight` [n_embd, n_embd] and `.bias`: `y = x @ weight + bias`; \
         heads are consecutive slices of n_embd / n_head columns; scores scaled by 1/sqrt(head size)\n\
         - `h.{{i}}.mlp.fc.*` [n_embd, 4 n_embd] then exact GELU, `h.{{i}}.mlp.proj.*` [4 n_embd, n_embd]\n\n\
         Each block: `x = x + attn(ln_1(x))`, then `x = x + mlp(ln_2(x))`.\n\n\
         {head}\
         ## Training\n\n\
         {steps} steps at batch {batch} windows of {block} tokens, AdamW (learning rate {lr} \
         with {warmup} warm-up steps and cosine decay to {min_lr}, weight decay {wd}, gradient \
         clipping at {clip}), seed {seed}. All hyperparameters are in `training_args.json`.\n\n\
         ## Metrics\n\n\
         | metric | value |\n|---|---|\n{metrics}\n\
         ## Intended use\n\n\
         {intended} It knows nothing beyond its training text, states no facts reliably, and \
         is not fit for any decision about people.\n",
        name = about.model_name,
        split = match bundle.head {
            Some(_) => "a tenth of the rows, chosen by the seed, validates; the rest trains.",
            None => {
                "the first 90% of the text trains, the last 10% validates (a contiguous cut, \
                 so no validation text appears in training windows)."
            }
        },
        head = bundle.head.as_ref().map_or(String::new(), |h| format!(
            "## Classification head\n\n\
             Classes, in index order: {classes}. A text's final normed states (`ln_f`) are \
             pooled ({pooling}) over its tokens, then `logits = pooled @ head.weight + head.bias` \
             (`head.weight` [n_embd, classes]); the output head tied to `wte` is not used.\n\n",
            classes = h.classes.join(", "),
            pooling = match h.pooling {
                Pooling::Mean => "the mean",
                Pooling::Last => "the last token's state",
            },
        )),
        intended = match bundle.head {
            Some(_) => "Experiments: a small classifier of texts like those it was trained on.",
            None =>
                "Experiments and teaching: a small model that writes text in the style of its corpus.",
        },
        tokens = match hp.tokenizer {
            TokenizerKind::Char => "characters as tokens; id 0 is an unknown character",
            TokenizerKind::Bpe => "byte-level BPE tokens learned from the training text",
        },
        id = about.model_id,
        run = about.run_id,
        dataset = about.dataset,
        licence = data_licence(&about.dataset),
        layers = config.n_layer,
        heads = config.n_head,
        embd = config.n_embd,
        block = config.block_size,
        vocab = config.vocab_size,
        params = config.parameters(),
        steps = hp.max_steps,
        batch = hp.batch_size,
        lr = hp.learning_rate,
        warmup = hp.warmup_steps,
        min_lr = hp.min_lr,
        wd = hp.weight_decay,
        clip = hp.grad_clip,
        seed = hp.seed,
    )
}
