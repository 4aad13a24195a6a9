//! Contact sheets: many pictures of one size laid out in a grid, in one PNG.
use anyhow::{bail, Result};
use image::{Rgb, RgbImage};

/// Lays `rows` of equally sized tiles out in a grid with `gap` pixels of dark grey between
/// them; short rows are padded. Fails when tiles differ in size or there are none.
pub fn grid(rows: &[Vec<RgbImage>], gap: u32) -> Result<RgbImage> {
    let Some(first) = rows.iter().flatten().next() else {
        bail!("a contact sheet needs at least one picture");
    };
    let (tw, th) = first.dimensions();
    if let Some(odd) = rows.iter().flatten().find(|t| t.dimensions() != (tw, th)) {
        bail!(
            "contact sheet tiles must share one size: {}x{} and {tw}x{th}",
            odd.width(),
            odd.height()
        );
    }
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let n_rows = rows.len() as u32;
    let mut sheet = RgbImage::from_pixel(
        cols * (tw + gap) + gap,
        n_rows * (th + gap) + gap,
        Rgb([40, 40, 40]),
    );
    for (r, row) in rows.iter().enumerate() {
        for (c, tile) in row.iter().enumerate() {
            let x = gap + c as u32 * (tw + gap);
            let y = gap + r as u32 * (th + gap);
            image::imageops::replace(&mut sheet, tile, i64::from(x), i64::from(y));
        }
    }
    Ok(sheet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_land_in_their_cells() {
        let red = RgbImage::from_pixel(3, 2, Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(3, 2, Rgb([0, 0, 255]));
        let sheet = grid(&[vec![red.clone(), blue], vec![red]], 1).unwrap();
        assert_eq!(sheet.dimensions(), (2 * 4 + 1, 2 * 3 + 1));
        assert_eq!(sheet.get_pixel(1, 1), &Rgb([255, 0, 0]));
        assert_eq!(sheet.get_pixel(5, 1), &Rgb([0, 0, 255]));
        assert_eq!(sheet.get_pixel(5, 4), &Rgb([40, 40, 40]));
    }

    #[test]
    fn mixed_sizes_and_empty_input_are_errors() {
        assert!(grid(&[], 1).is_err());
        let a = RgbImage::new(2, 2);
        let b = RgbImage::new(3, 2);
        assert!(grid(&[vec![a, b]], 1).is_err());
    }
}
