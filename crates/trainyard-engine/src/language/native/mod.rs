//! The language model's training step written by hand. burn's autodiff spent most of a small
//! transformer's step outside the products (graph building, unfused element-wise kernels,
//! scalar `erf`, copies): 0.45x PyTorch's throughput on nanoGPT's recipe. This path runs the
//! same network over flat buffers (`network`, its attention in `attention`), with its own kernels (`kernels`) and AdamW on
//! one parameter vector (`trainer`, laid out by `layout`). Its results are held to burn's
//! network by tests: the same loss and gradients from the same weights.

mod attention;
mod kernels;
mod layout;
mod network;
mod trainer;

pub use trainer::{handles, train, validation_loss};

#[cfg(test)]
mod tests;
