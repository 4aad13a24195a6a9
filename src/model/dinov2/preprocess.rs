//! Frame -> backbone input, as FlowCLAS feeds ALLO frames: RGB in [0, 1], normalised with ALLO
//! statistics, zero-padded (centred) to a multiple of the backbone's patch size, never resized.
use candle_core::{bail, Device, Result, Tensor};
use image::RgbImage;

/// Per-channel mean of ALLO frames (RGB), from the FlowCLAS configuration.
pub const ALLO_MEAN: [f32; 3] = [0.2083, 0.2124, 0.2146];
/// Per-channel standard deviation of ALLO frames (RGB), from the FlowCLAS configuration.
pub const ALLO_STD: [f32; 3] = [0.2669, 0.2700, 0.2711];

/// Where the frame sits inside the padded input: rows `top..top + height`, columns
/// `left..left + width`. Crop maps computed on the padded grid back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    /// Zero rows above the frame.
    pub top: usize,
    /// Zero columns left of the frame.
    pub left: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// Frame width in pixels.
    pub width: usize,
    /// The backbone's patch side: padded sides are multiples of it.
    pub patch: usize,
}

impl Padding {
    /// Centred padding of a `height` x `width` frame to the next multiples of `patch` (the odd
    /// extra row or column goes to the bottom or right, as `F.pad` with `(p // 2, p - p // 2)`).
    pub fn centred(height: usize, width: usize, patch: usize) -> Result<Self> {
        if patch == 0 {
            bail!("patch size 0: a backbone's patches are at least 1 pixel wide");
        }
        let extra = |n: usize| n.div_ceil(patch) * patch - n;
        Ok(Self {
            top: extra(height) / 2,
            left: extra(width) / 2,
            height,
            width,
            patch,
        })
    }

    /// Padded height, a multiple of the patch size.
    pub fn padded_height(&self) -> usize {
        self.height.div_ceil(self.patch.max(1)) * self.patch
    }

    /// Padded width, a multiple of the patch size.
    pub fn padded_width(&self) -> usize {
        self.width.div_ceil(self.patch.max(1)) * self.patch
    }
}

/// Turns an RGB frame into the normalised backbone input (1, 3, Hpad, Wpad) (f32), padded to
/// multiples of `patch` (the loaded backbone's `Config::patch_size`), and the padding to crop
/// results back with.
pub fn preprocess(img: &RgbImage, patch: usize, device: &Device) -> Result<(Tensor, Padding)> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        bail!("image is {w}x{h}: nothing to process");
    }
    let pad = Padding::centred(h, w, patch)?;
    let (hp, wp) = (pad.padded_height(), pad.padded_width());
    // Padding takes the value 0 after normalisation (the mean colour), as the model pads its
    // normalised input tensor.
    let mut data = vec![0f32; 3 * hp * wp];
    for (x, y, px) in img.enumerate_pixels() {
        let (row, col) = (y as usize + pad.top, x as usize + pad.left);
        for c in 0..3 {
            data[(c * hp + row) * wp + col] = (px[c] as f32 / 255.0 - ALLO_MEAN[c]) / ALLO_STD[c];
        }
    }
    Ok((Tensor::from_vec(data, (1, 3, hp, wp), device)?, pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_1080p_to_the_flowclas_grid() {
        let pad = Padding::centred(1080, 1920, 14).unwrap();
        assert_eq!((pad.padded_height(), pad.padded_width()), (1092, 1932));
        assert_eq!((pad.top, pad.left), (6, 6));
    }

    #[test]
    fn pads_to_the_backbones_patch_size() {
        // a patch-16 backbone: 1080 -> 1088 (4 rows each side), 1920 is already a multiple
        let pad = Padding::centred(1080, 1920, 16).unwrap();
        assert_eq!((pad.padded_height(), pad.padded_width()), (1088, 1920));
        assert_eq!((pad.top, pad.left), (4, 0));
        let img = RgbImage::from_pixel(13, 15, image::Rgb([1, 2, 3]));
        let (x, _) = preprocess(&img, 16, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[1, 3, 16, 16]);
        let err = preprocess(&img, 0, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("patch size 0"), "{err}");
    }

    #[test]
    fn normalises_and_pads_centred() {
        let img = RgbImage::from_pixel(13, 15, image::Rgb([255, 0, 51]));
        let (x, pad) = preprocess(&img, 14, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[1, 3, 28, 14]);
        assert_eq!((pad.top, pad.left), (6, 0));
        let x = x.squeeze(0).unwrap();
        let inside = x.get(0).unwrap().get(6).unwrap().get(0).unwrap();
        let want = (1.0 - ALLO_MEAN[0]) / ALLO_STD[0];
        assert!((inside.to_scalar::<f32>().unwrap() - want).abs() < 1e-6);
        let corner = x.get(2).unwrap().get(0).unwrap().get(13).unwrap();
        assert_eq!(corner.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn empty_image_is_an_error() {
        let img = RgbImage::new(0, 10);
        assert!(preprocess(&img, 14, &Device::Cpu).is_err());
    }
}
