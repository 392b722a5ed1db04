//! Training-image augmentation for the CNN: a random shift, a small rotation and random erasing.
//! Each sample's draw comes from a generator seeded by (seed, epoch, sample index), so the same
//! seed gives the same run and a resumed run augments exactly as an uninterrupted one.

use trainyard_core::Hyperparameters;
use trainyard_data::SeededRng;

/// What to do to each training image; `None` from [`Augment::new`] when nothing is on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Augment {
    shift: i64,
    rotate_degrees: f64,
    erase: f64,
    seed: u64,
    shape: [usize; 3],
}

impl Augment {
    pub(crate) fn new(hp: &Hyperparameters, image_shape: Option<[usize; 3]>) -> Option<Self> {
        let shape = image_shape?;
        let on = hp.augment_shift > 0 || hp.augment_rotate > 0.0 || hp.augment_erase > 0.0;
        on.then_some(Augment {
            shift: hp.augment_shift as i64,
            rotate_degrees: hp.augment_rotate,
            erase: hp.augment_erase,
            seed: hp.seed,
            shape,
        })
    }

    /// Augments one standardised image in place: sample `row` of the training set in `epoch`.
    pub(crate) fn apply(&self, image: &mut [f32], epoch: u32, row: usize) {
        let stream = (7u64 << 56) | ((epoch as u64 & 0xff_ffff) << 32) | (row as u64 & 0xffff_ffff);
        let mut rng = SeededRng::derive(self.seed, stream);
        let [channels, h, w] = self.shape;
        let plane = h * w;
        // Moved-in pixels take the image's background: its smallest value.
        let fill = image.iter().copied().fold(f32::INFINITY, f32::min);
        let dx = self.uniform_int(&mut rng);
        let dy = self.uniform_int(&mut rng);
        let angle = (rng.next_f64() * 2.0 - 1.0) * self.rotate_degrees.to_radians();
        let (sin, cos) = angle.sin_cos();
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        let mut out = vec![fill; image.len()];
        for c in 0..channels {
            let src = &image[c * plane..(c + 1) * plane];
            let dst = &mut out[c * plane..(c + 1) * plane];
            for y in 0..h {
                for x in 0..w {
                    // Inverse map: where in the source this output pixel comes from.
                    let (ty, tx) = (y as f64 - dy as f64 - cy, x as f64 - dx as f64 - cx);
                    let sy = (cos * ty + sin * tx + cy).round();
                    let sx = (-sin * ty + cos * tx + cx).round();
                    if (0.0..h as f64).contains(&sy) && (0.0..w as f64).contains(&sx) {
                        dst[y * w + x] = src[sy as usize * w + sx as usize];
                    }
                }
            }
        }
        if rng.next_f64() < self.erase {
            erase_rectangle(&mut out, self.shape, &mut rng);
        }
        image.copy_from_slice(&out);
    }

    fn uniform_int(&self, rng: &mut SeededRng) -> i64 {
        if self.shift == 0 {
            0
        } else {
            rng.below(2 * self.shift as usize + 1) as i64 - self.shift
        }
    }
}

/// Random erasing (Zhong et al. 2017): a rectangle of 2-20% of the image, aspect ratio between
/// 0.3 and 3.3, set to 0 (the training mean after standardisation).
fn erase_rectangle(image: &mut [f32], [channels, h, w]: [usize; 3], rng: &mut SeededRng) {
    let area = (0.02 + rng.next_f64() * 0.18) * (h * w) as f64;
    let aspect = (0.3f64.ln() + rng.next_f64() * (3.3f64.ln() - 0.3f64.ln())).exp();
    let eh = ((area * aspect).sqrt().round() as usize).clamp(1, h);
    let ew = ((area / aspect).sqrt().round() as usize).clamp(1, w);
    let top = rng.below(h - eh + 1);
    let left = rng.below(w - ew + 1);
    for c in 0..channels {
        for y in top..top + eh {
            let start = c * h * w + y * w + left;
            image[start..start + ew].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn augment(shift: u32, rotate: f64, erase: f64) -> Augment {
        let mut hp = Hyperparameters::defaults(
            trainyard_core::Algorithm::Cnn,
            &trainyard_core::DatasetShape {
                task: trainyard_core::Task::Classification,
                n_features: 16,
                n_classes: Some(2),
                image_shape: Some([1, 4, 4]),
                n_rows: 10,
            },
        );
        hp.augment_shift = shift;
        hp.augment_rotate = rotate;
        hp.augment_erase = erase;
        Augment::new(&hp, Some([1, 4, 4])).unwrap()
    }

    fn image() -> Vec<f32> {
        (0..16).map(|v| v as f32).collect()
    }

    #[test]
    fn the_same_sample_and_epoch_augment_the_same_way() {
        let a = augment(1, 10.0, 0.5);
        let (mut x, mut y, mut z) = (image(), image(), image());
        a.apply(&mut x, 3, 7);
        a.apply(&mut y, 3, 7);
        a.apply(&mut z, 4, 7);
        assert_eq!(x, y);
        assert_ne!(x, image());
        // Another epoch draws again; over a few epochs some draw differs.
        let differs = (4..10).any(|e| {
            let mut w = image();
            a.apply(&mut w, e, 7);
            w != x
        });
        assert!(differs || z != x);
    }

    #[test]
    fn a_shift_moves_pixels_and_fills_with_the_background() {
        let a = augment(2, 0.0, 0.0);
        for row in 0..20 {
            let mut x = image();
            a.apply(&mut x, 0, row);
            // Every value is either an original pixel or the background (0 here).
            assert!(x.iter().all(|v| (0.0..16.0).contains(v)));
        }
    }

    #[test]
    fn nothing_on_means_no_augmentation() {
        let hp = Hyperparameters::defaults(
            trainyard_core::Algorithm::Cnn,
            &trainyard_core::DatasetShape {
                task: trainyard_core::Task::Classification,
                n_features: 16,
                n_classes: Some(2),
                image_shape: Some([1, 4, 4]),
                n_rows: 10,
            },
        );
        assert!(Augment::new(&hp, Some([1, 4, 4])).is_none());
    }
}
