//! Dense and sparse kernels for the autoencoder's matrices, all row-major `f32`. Dense products
//! go through `gemm` (the kernel burn's CPU backend uses); sparse ones exploit that only a few
//! latents fire per token, which is where an SAE spends most of its time once trained.

use rayon::prelude::*;

/// A matrix view: `rows x cols` over `data` with element `(r, c)` at `r * rs + c * cs`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

impl<'a> View<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        debug_assert_eq!(data.len(), rows * cols);
        View {
            data,
            rows,
            cols,
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Depth of one slice of a product split along its depth (`matmul_split_depth`).
const DEPTH_CHUNK: usize = 2048;

/// `out = a @ b` (or `out += a @ b` when `accumulate`), `out` row-major `a.rows x b.cols`.
pub fn matmul(out: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    assert_eq!(out.len(), a.rows * b.cols, "output shape");
    let depth = a.cols;
    if depth >= 2 * DEPTH_CHUNK && depth >= 16 * a.rows.max(b.cols) {
        return matmul_split_depth(out, a, b, accumulate);
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && a.rows * a.cols * b.cols > 1 << 16 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm_into(out, a, b, accumulate, parallelism);
}

/// gemm splits only the output among threads, so a product far deeper than its output (a
/// convolution's weight gradient over a batch's pixels, 32 x 25088 x 144) ran on one thread
/// at a fifth of the machine's rate. Its depth is cut into fixed slices multiplied in
/// parallel, and their sums are added in slice order: the result depends on the shape alone,
/// not on the thread count.
fn matmul_split_depth(out: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    let (rows, cols, depth) = (a.rows, b.cols, a.cols);
    let partials: Vec<Vec<f32>> = (0..depth.div_ceil(DEPTH_CHUNK))
        .into_par_iter()
        .map(|i| {
            let (start, len) = (i * DEPTH_CHUNK, DEPTH_CHUNK.min(depth - i * DEPTH_CHUNK));
            let a_slice = View {
                data: &a.data[start * stride(a.cs)..],
                cols: len,
                ..a
            };
            let b_slice = View {
                data: &b.data[start * stride(b.rs)..],
                rows: len,
                ..b
            };
            let mut part = vec![0.0; rows * cols];
            gemm_into(&mut part, a_slice, b_slice, false, gemm::Parallelism::None);
            part
        })
        .collect();
    let (first, rest) = partials.split_first().expect("a deep product has slices");
    if accumulate {
        out.iter_mut().zip(first).for_each(|(o, p)| *o += p);
    } else {
        out.copy_from_slice(first);
    }
    for part in rest {
        out.iter_mut().zip(part).for_each(|(o, p)| *o += p);
    }
}

/// A view's stride as an index step (views never run backwards).
pub(crate) fn stride(s: isize) -> usize {
    usize::try_from(s).expect("views have non-negative strides")
}

fn gemm_into(
    out: &mut [f32],
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: every pointer and stride describes a slice whose length the caller's asserts tie
    // to the dimensions passed, and `out` does not alias the inputs (it is `&mut`).
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            out.as_mut_ptr(),
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs,
            a.rs,
            b.data.as_ptr(),
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight lanes so the compiler vectorises the sum (a plain fold must stay sequential).
    let mut lanes = [0.0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += ca[l] * cb[l];
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// `y += alpha * x`.
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// Sparse codes: for each row, its active latents and their values, by latent index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Codes {
    pub latents: usize,
    pub rows: Vec<Vec<(u32, f32)>>,
}

impl Codes {
    pub fn nonzeros(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }

    pub fn density(&self) -> f64 {
        self.nonzeros() as f64 / (self.rows.len() * self.latents).max(1) as f64
    }

    /// The codes as a dense row-major `rows x latents` matrix.
    pub fn dense(&self) -> Vec<f32> {
        let mut z = vec![0.0; self.rows.len() * self.latents];
        for (i, row) in self.rows.iter().enumerate() {
            for &(j, v) in row {
                z[i * self.latents + j as usize] = v;
            }
        }
        z
    }

    /// For each latent, the rows it is active on.
    pub fn firing_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.latents];
        for &(j, _) in self.rows.iter().flatten() {
            counts[j as usize] += 1;
        }
        counts
    }

    /// The same entries grouped by latent: for each latent, `(row, value)` in row order.
    pub fn by_latent(&self) -> Vec<Vec<(u32, f32)>> {
        let mut columns = vec![Vec::new(); self.latents];
        for (i, row) in self.rows.iter().enumerate() {
            for &(j, v) in row {
                columns[j as usize].push((i as u32, v));
            }
        }
        columns
    }
}

/// `out[i] += sum_j codes[i][j] * dict[j]` for every row (`dict` is `latents x d`).
pub fn sparse_decode(out: &mut [f32], codes: &Codes, dict: &[f32], d: usize) {
    out.par_chunks_mut(d)
        .zip(codes.rows.par_iter())
        .for_each(|(row, active)| {
            for &(j, v) in active {
                axpy(row, v, &dict[j as usize * d..][..d]);
            }
        });
}

/// `grad[j] += sum_i codes[i][j] * rows[i]` for every latent: the dictionary's gradient (or the
/// encoder's), summed per latent in row order so the result does not depend on threads.
pub fn sparse_outer(grad: &mut [f32], by_latent: &[Vec<(u32, f32)>], rows: &[f32], d: usize) {
    grad.par_chunks_mut(d)
        .zip(by_latent.par_iter())
        .for_each(|(g, entries)| {
            for &(i, v) in entries {
                axpy(g, v, &rows[i as usize * d..][..d]);
            }
        });
}

/// `codes[i][j] -> dot(rows[i], dict[j])` at every active entry: the gradient reaching the
/// active codes from the rows' gradient.
pub fn sparse_project(codes: &Codes, rows: &[f32], dict: &[f32], d: usize) -> Codes {
    let projected = codes
        .rows
        .par_iter()
        .enumerate()
        .map(|(i, active)| {
            let row = &rows[i * d..][..d];
            active
                .iter()
                .map(|&(j, _)| (j, dot(row, &dict[j as usize * d..][..d])))
                .collect()
        })
        .collect();
    Codes {
        latents: codes.latents,
        rows: projected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_a_naive_product_with_transposes() {
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect(); // 2x3
        let b: Vec<f32> = (0..12).map(|v| v as f32 * 0.5).collect(); // 3x4
        let mut out = vec![0.0; 8];
        matmul(&mut out, View::new(&a, 2, 3), View::new(&b, 3, 4), false);
        let mut naive = vec![0.0; 8];
        for i in 0..2 {
            for j in 0..4 {
                naive[i * 4 + j] = (0..3).map(|k| a[i * 3 + k] * b[k * 4 + j]).sum();
            }
        }
        assert_eq!(out, naive);
        // (a^T)^T @ b through a transposed view of a 3x2 copy.
        let at: Vec<f32> = (0..3)
            .flat_map(|k| (0..2).map(move |i| (i * 3 + k) as f32))
            .collect();
        let mut out_t = vec![1.0; 8];
        matmul(
            &mut out_t,
            View::new(&at, 3, 2).t(),
            View::new(&b, 3, 4),
            true,
        );
        let plus_one: Vec<f32> = naive.iter().map(|v| v + 1.0).collect();
        assert_eq!(out_t, plus_one);
    }

    /// A product deep enough to be split along its depth: close to an f64 sum, and the same
    /// bits on one thread as on four (the slices are fixed by the shape).
    #[test]
    fn a_deep_product_is_split_the_same_whatever_the_threads() {
        let (m, k, n) = (3, 2 * DEPTH_CHUNK + 77, 5);
        let a: Vec<f32> = (0..k * m)
            .map(|v| ((v * 7919) % 23) as f32 * 0.1 - 1.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|v| ((v * 104_729) % 19) as f32 * 0.1 - 0.9)
            .collect();
        let product = |threads: usize, accumulate: bool| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0.5; m * n];
            // `a` stored k x m and read transposed, as a weight gradient reads its input.
            pool.install(|| {
                matmul(
                    &mut out,
                    View::new(&a, k, m).t(),
                    View::new(&b, k, n),
                    accumulate,
                )
            });
            out
        };
        let out = product(1, false);
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k)
                    .map(|p| a[p * m + i] as f64 * b[p * n + j] as f64)
                    .sum();
                let got = out[i * n + j] as f64;
                assert!(
                    (got - exact).abs() < 1e-3 * exact.abs().max(1.0),
                    "{got} vs {exact}"
                );
            }
        }
        assert_eq!(product(4, false), out);
        let plus_half: Vec<f32> = out.iter().map(|v| v + 0.5).collect();
        let accumulated = product(4, true);
        for (x, y) in accumulated.iter().zip(&plus_half) {
            assert!((x - y).abs() < 1e-4 * y.abs().max(1.0));
        }
        assert_eq!(product(1, true), accumulated);
    }

    #[test]
    fn sparse_kernels_match_dense_ones() {
        let (n, m, d) = (3, 5, 4);
        let codes = Codes {
            latents: m,
            rows: vec![vec![(1, 2.0), (4, -1.0)], vec![], vec![(0, 0.5), (1, 1.0)]],
        };
        let dict: Vec<f32> = (0..m * d).map(|v| (v as f32 * 0.37).sin()).collect();
        let mut sparse = vec![0.0; n * d];
        sparse_decode(&mut sparse, &codes, &dict, d);
        let mut dense = vec![0.0; n * d];
        matmul(
            &mut dense,
            View::new(&codes.dense(), n, m),
            View::new(&dict, m, d),
            false,
        );
        for (s, e) in sparse.iter().zip(&dense) {
            assert!((s - e).abs() < 1e-6);
        }
        let rows: Vec<f32> = (0..n * d).map(|v| (v as f32 * 0.11).cos()).collect();
        let mut grad = vec![0.0; m * d];
        sparse_outer(&mut grad, &codes.by_latent(), &rows, d);
        let mut expected = vec![0.0; m * d];
        matmul(
            &mut expected,
            View::new(&codes.dense(), n, m).t(),
            View::new(&rows, n, d),
            false,
        );
        for (s, e) in grad.iter().zip(&expected) {
            assert!((s - e).abs() < 1e-6);
        }
        let projected = sparse_project(&codes, &rows, &dict, d);
        assert_eq!(projected.rows[0][1].0, 4);
        let want = dot(&rows[0..d], &dict[4 * d..5 * d]);
        assert!((projected.rows[0][1].1 - want).abs() < 1e-6);
    }
}
