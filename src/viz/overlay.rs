//! Heat overlays: an anomaly map in the Turbo colormap blended on the camera frame (the
//! temporal node's `/stars/refined/overlay`, and pictures of runs).
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma, Rgb, RgbImage};

/// Colour of non-finite map values: they must stand out, never look cold.
pub const NON_FINITE_COLOUR: Rgb<u8> = Rgb([255, 0, 255]);

/// Turbo colormap (Google's, 2019) via its published degree-5 polynomial fit; `v` is clamped
/// to [0, 1] (0 dark blue, 0.5 green, 1 dark red).
pub fn turbo(v: f32) -> Rgb<u8> {
    if !v.is_finite() {
        return NON_FINITE_COLOUR;
    }
    let x = f64::from(v.clamp(0.0, 1.0));
    let poly = |c: [f64; 6]| c.iter().rev().fold(0.0, |acc, k| acc * x + k);
    let r = poly([
        0.13572138,
        4.61539260,
        -42.66032258,
        132.13108234,
        -152.94239396,
        59.28637943,
    ]);
    let g = poly([
        0.09140261,
        2.19418839,
        4.84296658,
        -14.18503333,
        4.27729857,
        2.82956604,
    ]);
    let b = poly([
        0.10667330,
        12.64194608,
        -60.58204836,
        110.36276771,
        -89.90310912,
        27.34824973,
    ]);
    let byte = |c: f64| (c.clamp(0.0, 1.0) * 255.0).round() as u8;
    Rgb([byte(r), byte(g), byte(b)])
}

/// Blends `map` (row-major `map_w x map_h`) in [`turbo`] colours over `frame` with weight
/// `alpha` in [0, 1]; the map is resized bilinearly when its size differs from the frame's.
/// The result has the frame's size.
pub fn blend(frame: &RgbImage, map: &[f32], map_w: u32, map_h: u32, alpha: f32) -> RgbImage {
    let (w, h) = frame.dimensions();
    let resized;
    let values: &[f32] = if (map_w, map_h) == (w, h) {
        map
    } else {
        let buf: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_raw(map_w, map_h, map.to_vec()).unwrap_or_default();
        resized = imageops::resize(&buf, w, h, FilterType::Triangle).into_raw();
        &resized
    };
    let a = alpha.clamp(0.0, 1.0);
    RgbImage::from_fn(w, h, |x, y| {
        let v = values
            .get(y as usize * w as usize + x as usize)
            .copied()
            .unwrap_or(f32::NAN);
        let heat = turbo(v);
        let base = frame.get_pixel(x, y);
        Rgb(std::array::from_fn(|c| {
            (f32::from(base.0[c]) * (1.0 - a) + f32::from(heat.0[c]) * a).round() as u8
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turbo_runs_blue_to_red_and_flags_nan() {
        // Low scores are blue, high ones red (the map's ends are near black in Turbo).
        let (lo, hi) = (turbo(0.1), turbo(0.9));
        assert!(lo.0[2] > 2 * lo.0[0], "{lo:?}");
        assert!(hi.0[0] > 2 * hi.0[2], "{hi:?}");
        assert_eq!(turbo(-3.0), turbo(0.0));
        assert_eq!(turbo(f32::NAN), NON_FINITE_COLOUR);
    }

    #[test]
    fn blend_keeps_the_frame_size_and_mixes() {
        let frame = RgbImage::from_pixel(6, 4, Rgb([100, 100, 100]));
        let out = blend(&frame, &[1.0; 6], 3, 2, 0.5);
        assert_eq!(out.dimensions(), (6, 4));
        let hot = turbo(1.0);
        let expect = |c: usize| ((100.0 + f32::from(hot.0[c])) / 2.0).round() as u8;
        assert_eq!(out.get_pixel(5, 3).0, [expect(0), expect(1), expect(2)]);
        assert_eq!(blend(&frame, &[0.3; 24], 6, 4, 0.0), frame);
    }
}
