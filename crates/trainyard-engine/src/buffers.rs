//! Buffers a training step hands back and takes again: every step asks for the same sizes,
//! and fresh ones would be faulted in page by page (and unmapped after, with a TLB shootdown
//! on every thread) or zeroed each time. Measured on the default CNN: a third of its step was
//! the kernel doing that; on the language model, zeroing was 6% of its step.

/// Buffers kept at most per kind; past that, the smallest goes (a step hands back buffers
/// it was given, such as its batch, as well as those it took). A language model's step
/// keeps about 25 per block.
const KEPT: usize = 256;

#[derive(Debug, Default)]
pub struct Buffers {
    floats: Vec<Vec<f32>>,
    indices: Vec<Vec<u32>>,
}

fn keep<T>(free: &mut Vec<Vec<T>>, buffer: Vec<T>) {
    if buffer.capacity() == 0 {
        return;
    }
    free.push(buffer);
    if free.len() > KEPT {
        let smallest = (0..free.len()).min_by_key(|&i| free[i].capacity());
        if let Some(i) = smallest {
            free.swap_remove(i);
        }
    }
}

/// A free buffer of exactly `len` (every step asks for the same lengths, so after the first
/// one nothing is filled or faulted in), else the tightest capacity that holds `len`, else
/// the largest, grown. What it holds is stale.
fn take<T: Copy + Default>(free: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
    let exact = free.iter().position(|b| b.len() == len);
    let fitting = || {
        (0..free.len())
            .filter(|&i| free[i].capacity() >= len)
            .min_by_key(|&i| free[i].capacity())
    };
    let largest = || (0..free.len()).max_by_key(|&i| free[i].capacity());
    let chosen = exact.or_else(fitting).or_else(largest);
    let mut buffer = chosen.map_or_else(Vec::new, |i| free.swap_remove(i));
    buffer.resize(len, T::default());
    buffer
}

impl Buffers {
    /// `len` floats whose values are stale: only for an operation that writes every one.
    pub fn stale(&mut self, len: usize) -> Vec<f32> {
        take(&mut self.floats, len)
    }

    pub fn zeroed(&mut self, len: usize) -> Vec<f32> {
        let mut buffer = self.stale(len);
        buffer.fill(0.0);
        buffer
    }

    /// `len` indices whose values are stale.
    pub fn stale_indices(&mut self, len: usize) -> Vec<u32> {
        take(&mut self.indices, len)
    }

    pub fn give(&mut self, buffer: Vec<f32>) {
        keep(&mut self.floats, buffer);
    }

    pub fn give_indices(&mut self, buffer: Vec<u32>) {
        keep(&mut self.indices, buffer);
    }
}
