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

/// A free buffer that held exactly `len` before, else a new one. Every step asks for the
/// same lengths in the same order, so after the first step every request finds its buffer
/// and nothing is filled or faulted in again. Lending a buffer of another length does not
/// settle: a large buffer lent to a small request (or a small one grown for a large one)
/// leaves a later request to allocate, and the pool grew step after step that way (a language
/// model with gradient checkpointing went from 408 to 665 MB over its first ten steps).
fn take<T: Copy + Default>(free: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
    let exact = free.iter().position(|b| b.len() == len);
    let mut buffer = exact.map_or_else(Vec::new, |i| free.swap_remove(i));
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

    /// The floats the pool holds, free for the next request.
    #[cfg(test)]
    pub fn pooled_floats(&self) -> usize {
        self.floats.iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_goes_only_to_a_request_of_its_own_length() {
        let mut bufs = Buffers::default();
        bufs.give(vec![0.0; 1000]);
        let small = bufs.stale(10);
        assert!(
            small.capacity() < 1000,
            "the large buffer stays in the pool"
        );
        let large = bufs.stale(1000);
        assert_eq!(large.len(), 1000);
        assert_eq!(bufs.pooled_floats(), 0);
        bufs.give(small);
        bufs.give(large);
        assert_eq!(bufs.stale(10).len(), 10);
        assert_eq!(bufs.pooled_floats(), 1000);
    }
}
