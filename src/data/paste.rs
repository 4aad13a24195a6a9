//! Pseudo-anomalies for outlier exposure: objects cut out of training frames by a mask id
//! (our synthetic hard negatives, id 10 — never the test anomaly classes) and pasted, hard,
//! into normal frames (FlowCLAS spec §4).
use image::{imageops, GrayImage, Rgb, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Scale factors FlowCLAS draws from (0.5 twice, as upstream).
pub const SCALES: [f64; 6] = [0.1, 0.125, 0.25, 0.5, 0.5, 0.75];
/// Probability that a pasted object is converted to grey.
pub const GREY_PROBABILITY: f64 = 0.5;
/// Label of pasted pixels.
pub const OUTLIER: u8 = 1;
/// Label of normal pixels.
pub const INLIER: u8 = 0;
/// Label of pixels no loss may use.
pub const IGNORE: u8 = 255;

/// One connected object of a given mask id, with its bounding box in the source frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectBox {
    /// Top row of the bounding box.
    pub top: u32,
    /// Left column of the bounding box.
    pub left: u32,
    /// Box height.
    pub height: u32,
    /// Box width.
    pub width: u32,
    /// A pixel of the object (seeds the flood fill that recovers exactly this component).
    pub seed: (u32, u32),
}

/// Finds the 4-connected components of `id` in `mask` with at least `min_pixels` pixels.
pub fn find_objects(mask: &GrayImage, id: u8, min_pixels: usize) -> Vec<ObjectBox> {
    let mut seen = vec![false; (mask.width() * mask.height()) as usize];
    let mut objects = Vec::new();
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] == id && !seen[(y * mask.width() + x) as usize] {
            let pixels = component(mask, id, (x, y), &mut seen);
            if pixels.len() >= min_pixels {
                let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
                for &(px, py) in &pixels {
                    (x0, y0, x1, y1) = (x0.min(px), y0.min(py), x1.max(px), y1.max(py));
                }
                objects.push(ObjectBox {
                    top: y0,
                    left: x0,
                    height: y1 - y0 + 1,
                    width: x1 - x0 + 1,
                    seed: (x, y),
                });
            }
        }
    }
    objects
}

/// Pixels of the 4-connected component of `id` containing `seed`, marking them in `seen`.
fn component(mask: &GrayImage, id: u8, seed: (u32, u32), seen: &mut [bool]) -> Vec<(u32, u32)> {
    let (w, h) = mask.dimensions();
    let mut stack = vec![seed];
    let mut out = Vec::new();
    seen[(seed.1 * w + seed.0) as usize] = true;
    while let Some((x, y)) = stack.pop() {
        out.push((x, y));
        let neighbours = [
            (x.wrapping_sub(1), y),
            (x + 1, y),
            (x, y.wrapping_sub(1)),
            (x, y + 1),
        ];
        for (nx, ny) in neighbours {
            if nx < w
                && ny < h
                && !seen[(ny * w + nx) as usize]
                && mask.get_pixel(nx, ny).0[0] == id
            {
                seen[(ny * w + nx) as usize] = true;
                stack.push((nx, ny));
            }
        }
    }
    out
}

/// An object cut out of its frame: its RGB box and which box pixels belong to it.
#[derive(Clone, Debug)]
pub struct Cutout {
    /// The bounding box's pixels.
    pub rgb: RgbImage,
    /// 255 on the object, 0 elsewhere in the box.
    pub alpha: GrayImage,
}

/// Cuts `object` (found by [`find_objects`] on `mask` with `id`) out of `image`.
pub fn cut(image: &RgbImage, mask: &GrayImage, id: u8, object: &ObjectBox) -> Cutout {
    let mut seen = vec![false; (mask.width() * mask.height()) as usize];
    let mut alpha = GrayImage::new(object.width, object.height);
    for (x, y) in component(mask, id, object.seed, &mut seen) {
        alpha.put_pixel(x - object.left, y - object.top, image::Luma([255]));
    }
    let rgb =
        imageops::crop_imm(image, object.left, object.top, object.width, object.height).to_image();
    Cutout { rgb, alpha }
}

/// How one paste is done; drawn by [`PasteParams::sample`], stored in feature-cache keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PasteParams {
    /// Resize factor applied to the object.
    pub scale: f64,
    /// Convert to grey.
    pub grey: bool,
    /// Target position of the scaled object's top-left corner.
    pub top: u32,
    /// Target position of the scaled object's top-left corner.
    pub left: u32,
}

impl PasteParams {
    /// Draws a scale, the grey flag and a position where the scaled object fits in `target`
    /// (`(width, height)`; objects larger than the target are clipped at its border).
    pub fn sample(rng: &mut impl Rng, object: &ObjectBox, target: (u32, u32)) -> Self {
        let scale = SCALES[rng.random_range(0..SCALES.len())];
        let (w, h) = scaled_size(object.width, object.height, scale);
        Self {
            scale,
            grey: rng.random_bool(GREY_PROBABILITY),
            top: rng.random_range(0..=target.1.saturating_sub(h)),
            left: rng.random_range(0..=target.0.saturating_sub(w)),
        }
    }
}

fn scaled_size(w: u32, h: u32, scale: f64) -> (u32, u32) {
    let s = |v: u32| ((v as f64 * scale).round() as u32).max(1);
    (s(w), s(h))
}

/// Pastes `cutout` into `target` (hard copy, no blending) and sets its pixels to [`OUTLIER`]
/// in `labels` (same size as `target`).
pub fn paste(target: &mut RgbImage, labels: &mut GrayImage, cutout: &Cutout, params: &PasteParams) {
    let (w, h) = scaled_size(cutout.rgb.width(), cutout.rgb.height(), params.scale);
    let rgb = imageops::resize(&cutout.rgb, w, h, imageops::FilterType::Triangle);
    let alpha = imageops::resize(&cutout.alpha, w, h, imageops::FilterType::Nearest);
    for (x, y, a) in alpha.enumerate_pixels() {
        let (tx, ty) = (params.left + x, params.top + y);
        if a.0[0] == 0 || tx >= target.width() || ty >= target.height() {
            continue;
        }
        let p = rgb.get_pixel(x, y).0;
        let p = if params.grey {
            let l = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).round() as u8;
            [l, l, l]
        } else {
            p
        };
        target.put_pixel(tx, ty, Rgb(p));
        labels.put_pixel(tx, ty, image::Luma([OUTLIER]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn frame_with_square() -> (RgbImage, GrayImage) {
        let mut img = RgbImage::from_pixel(20, 10, Rgb([10, 20, 30]));
        let mut mask = GrayImage::new(20, 10);
        for y in 2..6 {
            for x in 3..9 {
                img.put_pixel(x, y, Rgb([200, 0, 0]));
                mask.put_pixel(x, y, image::Luma([10]));
            }
        }
        mask.put_pixel(15, 8, image::Luma([10])); // a one-pixel speck, below min size
        (img, mask)
    }

    #[test]
    fn finds_components_above_min_size() {
        let (_, mask) = frame_with_square();
        let objects = find_objects(&mask, 10, 2);
        assert_eq!(objects.len(), 1);
        let o = &objects[0];
        assert_eq!((o.top, o.left, o.height, o.width), (2, 3, 4, 6));
        assert_eq!(find_objects(&mask, 10, 1).len(), 2);
    }

    #[test]
    fn paste_copies_object_pixels_and_labels_them() {
        let (img, mask) = frame_with_square();
        let object = &find_objects(&mask, 10, 2)[0];
        let cutout = cut(&img, &mask, 10, object);
        let mut target = RgbImage::new(30, 30);
        let mut labels = GrayImage::new(30, 30);
        let params = PasteParams {
            scale: 0.5,
            grey: false,
            top: 5,
            left: 7,
        };
        paste(&mut target, &mut labels, &cutout, &params);
        let outliers = labels.pixels().filter(|p| p.0[0] == OUTLIER).count();
        assert_eq!(outliers, 3 * 2); // 6x4 box halved
        assert_eq!(target.get_pixel(7, 5).0, [200, 0, 0]);
        assert_eq!(target.get_pixel(6, 5).0, [0, 0, 0]);
        let grey = PasteParams {
            grey: true,
            ..params
        };
        paste(&mut target, &mut labels, &cutout, &grey);
        let l = (0.299f32 * 200.0).round() as u8;
        assert_eq!(target.get_pixel(7, 5).0, [l, l, l]);
    }

    #[test]
    fn sampled_params_fit_and_use_spec_scales() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let object = ObjectBox {
            top: 0,
            left: 0,
            height: 40,
            width: 40,
            seed: (0, 0),
        };
        for _ in 0..100 {
            let p = PasteParams::sample(&mut rng, &object, (50, 30));
            assert!(SCALES.contains(&p.scale));
            let (w, h) = scaled_size(40, 40, p.scale);
            assert!(p.left + w <= 50 || p.left == 0);
            assert!(p.top + h <= 30 || p.top == 0);
        }
    }
}
