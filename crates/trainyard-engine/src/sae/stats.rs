//! Statistics of an activation matrix: its centre (where the decoder bias starts) and the
//! scale that brings its mean norm to `sqrt(d_in)`.

use super::spec::BiasInit;

/// The mean, the geometric median (Weiszfeld's iterations from the mean) or zeros.
pub fn centre(x: &[f32], d: usize, init: BiasInit) -> Vec<f32> {
    let n = (x.len() / d).max(1);
    let mut mean = vec![0.0f64; d];
    for row in x.chunks(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v) / n as f64;
        }
    }
    match init {
        BiasInit::Zeros => vec![0.0; d],
        BiasInit::Mean => mean.iter().map(|v| *v as f32).collect(),
        BiasInit::GeometricMedian => geometric_median(x, d, mean),
    }
}

fn geometric_median(x: &[f32], d: usize, start: Vec<f64>) -> Vec<f32> {
    // A sample bounds the cost; the median of 16k points is stable to well within noise.
    let rows: Vec<&[f32]> = x.chunks(d).take(16_384).collect();
    let mut point = start;
    for _ in 0..30 {
        let mut next = vec![0.0f64; d];
        let mut total = 0.0f64;
        for row in &rows {
            let distance = row
                .iter()
                .zip(&point)
                .map(|(v, p)| (f64::from(*v) - p).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-8);
            total += 1.0 / distance;
            for (acc, v) in next.iter_mut().zip(row.iter()) {
                *acc += f64::from(*v) / distance;
            }
        }
        let moved: f64 = next
            .iter_mut()
            .zip(&point)
            .map(|(n, p)| {
                *n /= total;
                (*n - p).powi(2)
            })
            .sum();
        point = next;
        if moved.sqrt() < 1e-6 {
            break;
        }
    }
    point.iter().map(|v| *v as f32).collect()
}

/// `sqrt(d) / mean |x|`: scaling by it makes the mean squared norm about `d`, so
/// hyperparameters carry over between models of different widths.
pub fn norm_scale(x: &[f32], d: usize) -> f32 {
    let norm = mean_norm(x, d);
    if norm > 0.0 {
        ((d as f64).sqrt() / norm) as f32
    } else {
        1.0
    }
}

/// The mean Euclidean norm of the rows.
pub fn mean_norm(x: &[f32], d: usize) -> f64 {
    let n = (x.len() / d).max(1);
    x.chunks(d)
        .map(|row| {
            row.iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum::<f64>()
        / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_geometric_median_resists_an_outlier_the_mean_follows() {
        let mut x = vec![0.0f32; 2 * 9];
        x.extend([100.0, 100.0]);
        let mean = centre(&x, 2, BiasInit::Mean);
        let median = centre(&x, 2, BiasInit::GeometricMedian);
        assert!((mean[0] - 10.0).abs() < 1e-4);
        assert!(median[0].abs() < 0.5, "{median:?}");
        assert_eq!(centre(&x, 2, BiasInit::Zeros), vec![0.0, 0.0]);
    }

    #[test]
    fn the_norm_scale_brings_the_mean_norm_to_root_d() {
        let x: Vec<f32> = (0..400).map(|i| (i as f32 * 0.1).sin() * 7.0).collect();
        let s = norm_scale(&x, 4);
        let scaled: Vec<f32> = x.iter().map(|v| v * s).collect();
        let norm = mean_norm(&scaled, 4);
        assert!((norm - 2.0).abs() < 1e-4, "{norm}");
    }
}
