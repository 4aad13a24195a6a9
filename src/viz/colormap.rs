//! Colours for pictures: a fixed palette that makes semantic-id masks readable.
use image::{GrayImage, Rgb, RgbImage};

/// The display colour of a mask id (DESIGN.md ids: 0 space, 1 Earth, 2-8 station parts,
/// 9 anomaly, 10 hard negative, 255 ignore; any other id gets a colour hashed from its value).
pub fn mask_colour(id: u8) -> Rgb<u8> {
    Rgb(match id {
        0 => [0, 0, 0],
        1 => [30, 70, 160],
        2 => [200, 200, 190],
        3 => [120, 120, 130],
        4 => [235, 235, 255],
        5 => [60, 90, 220],
        6 => [0, 220, 200],
        7 => [170, 150, 110],
        8 => [140, 100, 180],
        9 => [255, 30, 30],
        10 => [255, 200, 0],
        255 => [255, 0, 255],
        other => {
            // Knuth's multiplicative hash spreads neighbouring ids to distinct colours.
            let h = u32::from(other).wrapping_mul(2_654_435_761);
            [(h >> 24) as u8, (h >> 16) as u8, (h >> 8) as u8]
        }
    })
}

/// A mask of semantic ids as an RGB picture, one [`mask_colour`] per id.
pub fn colourise_mask(mask: &GrayImage) -> RgbImage {
    RgbImage::from_fn(mask.width(), mask.height(), |x, y| {
        mask_colour(mask.get_pixel(x, y).0[0])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ids_get_distinct_colours() {
        let ids = [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(mask_colour(*a), mask_colour(*b), "{a} vs {b}");
            }
        }
        let mask = GrayImage::from_raw(2, 1, vec![9, 0]).unwrap();
        let rgb = colourise_mask(&mask);
        assert_eq!(rgb.get_pixel(0, 0), &Rgb([255, 30, 30]));
        assert_eq!(rgb.get_pixel(1, 0), &Rgb([0, 0, 0]));
    }
}
