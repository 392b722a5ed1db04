use super::pack::{from_bf16, to_bf16};
use super::*;

/// A deterministic matrix with values of mixed sign and magnitude.
fn matrix(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97));
            ((x >> 8) as f32 / (1 << 24) as f32 - 0.5) * if i % 7 == 0 { 8.0 } else { 1.0 }
        })
        .collect()
}

/// `a @ b` with the factors rounded to bf16 and the sums in f64, and each entry's sum of
/// absolute terms (what a sum's rounding error scales with).
fn reference(a: View<'_>, b: View<'_>) -> (Vec<f64>, Vec<f64>) {
    let (ra, rb) = (pack::rounded(a), pack::rounded(b));
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut exact = vec![0.0; m * n];
    let mut magnitude = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let term = f64::from(ra[i * k + p]) * f64::from(rb[p * n + j]);
                exact[i * n + j] += term;
                magnitude[i * n + j] += term.abs();
            }
        }
    }
    (exact, magnitude)
}

fn check_shapes(kernel: Kernel) {
    // Odd shapes leave partial tiles and blocks on every side; 784 x 10 is the MLP's output.
    for (m, k, n) in [
        (37, 50, 19),
        (64, 784, 10),
        (5, 1, 3),
        (33, 33, 65),
        (130, 256, 40),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a_data = matrix(m, k, 1);
            let b_data = matrix(k, n, 2);
            let a = if ta {
                View::new(&a_data, k, m).t()
            } else {
                View::new(&a_data, m, k)
            };
            let b = if tb {
                View::new(&b_data, n, k).t()
            } else {
                View::new(&b_data, k, n)
            };
            let (exact, magnitude) = reference(a, b);
            let mut out = vec![f32::NAN; m * n];
            matmul_on(kernel, &mut out, a, b, false);
            let mut summed = vec![1.0f32; m * n];
            matmul_on(kernel, &mut summed, a, b, true);
            for i in 0..m * n {
                let bound = 1e-5 * magnitude[i] + 1e-30;
                let shape = format!("{kernel:?} {m}x{k}x{n}, transposed {ta}/{tb}, entry {i}");
                assert!(
                    (f64::from(out[i]) - exact[i]).abs() <= bound,
                    "{shape}: {} vs {}",
                    out[i],
                    exact[i]
                );
                let expected = exact[i] + 1.0;
                assert!(
                    (f64::from(summed[i]) - expected).abs() <= bound + 1e-6,
                    "{shape} (accumulated)"
                );
            }
        }
    }
}

#[test]
fn every_kernel_here_matches_the_rounded_factors_exact_product() {
    let kernels = Kernel::available();
    for missing in [Kernel::Amx, Kernel::Avx512Bf16] {
        if !kernels.contains(&missing) {
            // The kernels are CPU instructions: a machine can only test those it has.
            eprintln!("SKIPPED {missing:?}: this CPU does not have it");
        }
    }
    assert_eq!(
        kernels.last(),
        Some(&Kernel::Portable),
        "the portable kernel runs everywhere"
    );
    for kernel in kernels {
        check_shapes(kernel);
    }
}

#[test]
fn a_product_is_the_same_bits_every_time() {
    let (m, k, n) = (300, 784, 256);
    let (a, b) = (matrix(m, k, 3), matrix(k, n, 4));
    for kernel in Kernel::available() {
        let product = || {
            let mut out = vec![0.0; m * n];
            matmul_on(
                kernel,
                &mut out,
                View::new(&a, m, k),
                View::new(&b, k, n),
                false,
            );
            out
        };
        let first = product();
        for _ in 0..3 {
            let again = product();
            assert!(
                again
                    .iter()
                    .zip(&first)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{kernel:?}"
            );
        }
    }
}

#[test]
fn rounding_to_bf16_is_to_nearest_with_ties_to_even() {
    let step = 2f32.powi(-7); // bf16's spacing just above 1.0
    assert_eq!(
        from_bf16(to_bf16(1.0 + step / 2.0)),
        1.0,
        "a tie goes to the even neighbour"
    );
    assert_eq!(
        from_bf16(to_bf16(1.0 + step * 1.5)),
        1.0 + 2.0 * step,
        "a tie goes up to even"
    );
    assert_eq!(from_bf16(to_bf16(1.0 + step * 0.75)), 1.0 + step);
    assert_eq!(from_bf16(to_bf16(-3.0)), -3.0);
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    assert_eq!(
        from_bf16(to_bf16(f32::MAX)),
        f32::INFINITY,
        "past bf16's largest finite"
    );
}

#[test]
fn whole_rows_round_as_to_bf16_does() {
    if !avx512::available() {
        eprintln!("SKIPPED: this CPU has no AVX-512 BF16 (its row rounding is not used here)");
        return;
    }
    let mut ks: Vec<f32> = matrix(1, 32, 9);
    ks[3] = 1.0 + 2f32.powi(-8); // a tie, to even
    ks[4] = f32::NAN;
    ks[5] = -0.0;
    ks[6] = f32::INFINITY;
    ks[7] = 1e-40; // subnormal: the instruction makes it zero
    let mut row = [0u32; 16];
    avx512::round_row(&ks, &mut row);
    for (p, &pair) in row.iter().enumerate() {
        for (half, &k) in [pair as u16, (pair >> 16) as u16].iter().zip(&ks[2 * p..]) {
            let expected = if k.is_subnormal() { 0 } else { to_bf16(k) };
            assert_eq!(*half, expected, "pair {p}: {k}");
        }
    }
}
