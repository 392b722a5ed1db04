//! A decoder-only transformer: token and position embeddings, pre-norm blocks of causal
//! self-attention and a GELU MLP, a final norm, and an output head tied to the token embedding.

use burn::module::Module;
use burn::nn::attention::{
    MhaInput, MultiHeadAttention, MultiHeadAttentionConfig, generate_autoregressive_mask,
};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData, activation};
use serde::{Deserialize, Serialize};
use trainyard_data::SeededRng;

/// Everything needed to rebuild the network; stored with checkpoints and models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub block_size: usize,
    /// Biases in the linear layers and norms.
    pub bias: bool,
}

impl GptConfig {
    /// Estimated training memory in bytes at a batch size: weights, gradients and AdamW's two
    /// moments per parameter, plus the activations autodiff keeps per block (the residual
    /// stream, norms, q/k/v, the MLP's 4x hidden layer, and the [heads, time, time] attention
    /// scores and weights) and the logits.
    pub fn estimated_bytes(&self, batch: usize) -> f64 {
        self.estimate(batch, self.n_layer as f64 * self.block_floats())
    }

    /// [`GptConfig::estimated_bytes`] with gradient checkpointing: each block's input, and
    /// one block's activations at a time (recomputed in the backward pass). Measured at
    /// block_size 256, batch 32, 4 blocks: a 235 MB peak against 510 without checkpointing.
    pub fn estimated_bytes_recomputing(&self, batch: usize) -> f64 {
        let inputs = self.n_layer as f64 * self.block_size as f64 * self.n_embd as f64;
        self.estimate(batch, inputs + self.block_floats())
    }

    /// A block's activations per window, in floats.
    fn block_floats(&self) -> f64 {
        let (t, e) = (self.block_size as f64, self.n_embd as f64);
        t * e * 16.0 + 3.0 * self.n_head as f64 * t * t
    }

    fn estimate(&self, batch: usize, blocks: f64) -> f64 {
        const F32: f64 = 4.0;
        let t = self.block_size as f64;
        let per_window = blocks + 2.0 * t * self.vocab_size as f64;
        self.parameters() as f64 * F32 * 4.0 + batch as f64 * per_window * F32
    }

    /// Trainable parameters (the head shares the token embedding's).
    pub fn parameters(&self) -> usize {
        let e = self.n_embd;
        let bias = usize::from(self.bias);
        let norm = e * (1 + bias);
        let attention = 4 * (e * e + e * bias);
        let mlp = e * 4 * e + 4 * e * bias + 4 * e * e + e * bias;
        self.vocab_size * e
            + self.block_size * e
            + self.n_layer * (2 * norm + attention + mlp)
            + norm
    }
}

#[derive(Module, Debug)]
pub(super) struct Block {
    pub(super) ln_attention: LayerNorm,
    pub(super) attention: MultiHeadAttention,
    pub(super) ln_mlp: LayerNorm,
    pub(super) expand: Linear,
    pub(super) project: Linear,
}

#[derive(Module, Debug)]
pub struct Gpt {
    pub(super) tokens: Embedding,
    pub(super) positions: Embedding,
    pub(super) blocks: Vec<Block>,
    pub(super) ln_final: LayerNorm,
}

impl Gpt {
    pub fn new(config: &GptConfig, device: &Device) -> Self {
        let e = config.n_embd;
        let norm = || LayerNormConfig::new(e).with_bias(config.bias).init(device);
        let blocks = (0..config.n_layer)
            .map(|_| Block {
                ln_attention: norm(),
                attention: MultiHeadAttentionConfig::new(e, config.n_head)
                    .with_dropout(0.0)
                    .with_query_bias(config.bias)
                    .with_key_bias(config.bias)
                    .with_value_bias(config.bias)
                    .with_output_bias(config.bias)
                    .init(device),
                ln_mlp: norm(),
                expand: LinearConfig::new(e, 4 * e)
                    .with_bias(config.bias)
                    .init(device),
                project: LinearConfig::new(4 * e, e)
                    .with_bias(config.bias)
                    .init(device),
            })
            .collect();
        // Small embeddings (as GPT-2 does): the tied head starts with near-uniform predictions.
        let small = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Gpt {
            tokens: EmbeddingConfig::new(config.vocab_size, e)
                .with_initializer(small.clone())
                .init(device),
            positions: EmbeddingConfig::new(config.block_size, e)
                .with_initializer(small)
                .init(device),
            blocks,
            ln_final: norm(),
        }
    }

    /// Next-token logits for every position, `[batch * time, vocab]`, of `tokens` given as
    /// `[batch, time]` with `time <= block_size`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<2> {
        self.forward_with(tokens, None)
    }

    /// [`Gpt::forward`], with dropout on the embeddings and on each attention and MLP output
    /// when training.
    pub fn forward_with(&self, tokens: Tensor<2, Int>, dropout: Option<&mut Dropout>) -> Tensor<2> {
        let x = self.hidden(tokens, dropout);
        let [batch, time, e] = x.dims();
        let flat: Tensor<2> = x.reshape([batch * time, e]);
        // The head is the token embedding's transpose (weight tying).
        flat.matmul(self.tokens.weight.val().transpose())
    }

    /// The final normed hidden state of every position, `[batch, time, n_embd]`. Attention is
    /// causal, so a right-padded sequence's real positions do not see its padding.
    pub fn hidden(&self, tokens: Tensor<2, Int>, dropout: Option<&mut Dropout>) -> Tensor<3> {
        self.run(tokens, dropout, &mut |_, _, x| x)
    }

    /// Logits `[batch * time, vocab]` with `hook` seeing (and able to replace) every block's
    /// attention output, MLP output and residual stream: how activations are read out, and
    /// how an autoencoder's reconstruction is spliced in.
    pub fn forward_hooked(&self, tokens: Tensor<2, Int>, hook: &mut Hook<'_>) -> Tensor<2> {
        let x = self.run(tokens, None, hook);
        let [batch, time, e] = x.dims();
        let flat: Tensor<2> = x.reshape([batch * time, e]);
        flat.matmul(self.tokens.weight.val().transpose())
    }

    /// The token embedding, `[vocab_size, n_embd]` (also the tied output head).
    pub fn token_embedding(&self) -> Tensor<2> {
        self.tokens.weight.val()
    }

    fn run(
        &self,
        tokens: Tensor<2, Int>,
        mut dropout: Option<&mut Dropout>,
        hook: &mut Hook<'_>,
    ) -> Tensor<3> {
        let [batch, time] = tokens.dims();
        let device = tokens.device();
        let positions: Vec<i64> = (0..batch).flat_map(|_| 0..time as i64).collect();
        let positions =
            Tensor::<2, Int>::from_data(TensorData::new(positions, [batch, time]), &device);
        let attention_dropout = dropout.as_ref().and_then(|d| d.attention);
        let mut drop = |x: Tensor<3>| match dropout.as_deref_mut() {
            Some(d) => d.apply(x),
            None => x,
        };
        let mut x = drop(self.tokens.forward(tokens) + self.positions.forward(positions));
        let mask = generate_autoregressive_mask(batch, time, &device);
        for (layer, block) in self.blocks.iter().enumerate() {
            let normed = block.ln_attention.forward(x.clone());
            let attended = match attention_dropout {
                Some(masks) => dropped_attention(&block.attention, normed, &mask, masks, layer),
                None => {
                    let input = MhaInput::self_attn(normed).mask_attn(mask.clone());
                    block.attention.forward(input).context
                }
            };
            x = x + hook(layer, Site::AttnOut, drop(attended));
            let hidden = activation::gelu(block.expand.forward(block.ln_mlp.forward(x.clone())));
            x = x + hook(layer, Site::MlpOut, drop(block.project.forward(hidden)));
            x = hook(layer, Site::ResidPost, x);
        }
        self.ln_final.forward(x)
    }
}

/// Sees a block's activations at a site, `[batch, time, n_embd]`, and returns what the
/// network continues with.
pub type Hook<'a> = dyn FnMut(usize, Site, Tensor<3>) -> Tensor<3> + 'a;

/// Where in a block activations are read: the attention output, the MLP output (each before
/// it is added to the residual stream), or the residual stream after the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    ResidPost,
    MlpOut,
    AttnOut,
}

impl Site {
    pub const NAMES: [&'static str; 3] = ["resid_post", "mlp_out", "attn_out"];

    /// A name from [`Site::NAMES`].
    pub fn parse(name: &str) -> Site {
        match name {
            "mlp_out" => Site::MlpOut,
            "attn_out" => Site::AttnOut,
            _ => Site::ResidPost,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Site::ResidPost => "resid_post",
            Site::MlpOut => "mlp_out",
            Site::AttnOut => "attn_out",
        }
    }
}

/// Causal self-attention as burn's computes it, with `masks` applied to the probabilities
/// (burn's own attention dropout draws from the backend's global generator).
fn dropped_attention(
    attention: &MultiHeadAttention,
    x: Tensor<3>,
    causal: &Tensor<3, Bool>,
    masks: AttentionDropout,
    layer: usize,
) -> Tensor<3> {
    let [batch, time, width] = x.dims();
    let (heads, head_width) = (attention.n_heads, attention.d_k);
    let split = |linear: &Linear| {
        linear
            .forward(x.clone())
            .reshape([batch, time, heads, head_width])
            .swap_dims(1, 2)
    };
    let (q, k, v) = (
        split(&attention.query),
        split(&attention.key),
        split(&attention.value),
    );
    let scores = q
        .matmul(k.transpose())
        .div_scalar((head_width as f32).sqrt())
        .mask_fill(
            causal.clone().reshape([batch, 1, time, time]),
            attention.min_float,
        );
    let mut mask = vec![0.0f32; batch * heads * time * time];
    for (head, m) in mask.chunks_exact_mut(time * time).enumerate() {
        masks.fill(layer, head, time, m);
    }
    let mask = Tensor::<4>::from_data(
        TensorData::new(mask, [batch, heads, time, time]),
        &x.device(),
    );
    let context = (activation::softmax(scores, 3) * mask)
        .matmul(v)
        .swap_dims(1, 2)
        .reshape([batch, time, width]);
    attention.output.forward(context)
}

/// Dropout whose masks come from the run's own generator (seeded per step), not the
/// backend's global one, so a resumed run draws the masks an uninterrupted one would.
pub struct Dropout {
    pub p: f64,
    pub rng: SeededRng,
    /// Dropout on the attention probabilities, drawn apart from `rng`.
    pub attention: Option<AttentionDropout>,
}

/// The streams of the dropout masks on the embeddings and blocks' outputs, one per micro-batch
/// (burn's network and the native one draw the same masks from them).
pub const DROPOUT_STREAMS: u64 = 2_000_000;

/// Far above any other stream a run derives from its seed (those count steps from 0 up to
/// a few million).
const ATTENTION_DROPOUT_STREAMS: u64 = 1 << 56;

/// Dropout on the attention probabilities (nanoGPT's `attn_dropout`). Every (block, window,
/// head) draws its mask from its own keyed generator: the native network draws a head's
/// mask where it computes that head, on whichever thread, and regenerates it in the
/// backward pass instead of keeping it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionDropout {
    pub p: f64,
    key: u64,
}

impl AttentionDropout {
    /// The masks of micro-batch `draw` of a run seeded `seed`; none when `p` is 0.
    pub fn for_draw(p: f64, seed: u64, draw: u64) -> Option<Self> {
        (p > 0.0).then(|| AttentionDropout {
            p,
            key: SeededRng::derive(seed, ATTENTION_DROPOUT_STREAMS + draw).next_u64(),
        })
    }

    /// Fills `mask`, `[time, time]`, for head `head` (`window * n_head + head`) of block
    /// `layer`: 0 or `1 / (1 - p)` on and below the diagonal, 0 above it (where a causal
    /// head's probabilities are 0 anyway).
    pub fn fill(&self, layer: usize, head: usize, time: usize, mask: &mut [f32]) {
        let mut rng = SeededRng::derive(self.key, ((layer as u64) << 40) | head as u64);
        let keep = (1.0 / (1.0 - self.p)) as f32;
        for (i, row) in mask.chunks_exact_mut(time).enumerate() {
            for m in &mut row[..=i] {
                *m = if rng.next_f64() < self.p { 0.0 } else { keep };
            }
            row[i + 1..].fill(0.0);
        }
    }
}

impl Dropout {
    /// Micro-batch `draw`'s dropout in a run seeded `seed`, at rate `p` on the embeddings and
    /// the blocks' outputs and `attention` on the attention probabilities; none when both
    /// are 0.
    pub fn for_draw(p: f64, attention: f64, seed: u64, draw: u64) -> Option<Self> {
        (p > 0.0 || attention > 0.0).then(|| Dropout {
            p,
            rng: SeededRng::derive(seed, DROPOUT_STREAMS + draw),
            attention: AttentionDropout::for_draw(attention, seed, draw),
        })
    }

    fn apply(&mut self, x: Tensor<3>) -> Tensor<3> {
        if self.p <= 0.0 {
            return x;
        }
        let dims = x.dims();
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let mask: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| {
                if self.rng.next_f64() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let device = x.device();
        x * Tensor::<3>::from_data(TensorData::new(mask, dims), &device)
    }
}

/// Tokens as a `[rows, cols]` integer tensor.
pub fn token_tensor(tokens: &[u32], rows: usize, cols: usize, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    Tensor::from_data(TensorData::new(data, [rows, cols]), device)
}
