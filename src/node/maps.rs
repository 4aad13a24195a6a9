//! `32FC<N>` images <-> the temporal module's map and feature types.
//!
//! A `32FC1` image is an [`AnomalyMap`]; a `32FC<C>` image of the 16x16 patch grid holds
//! [`PatchFeatures`] with the channels interleaved per pixel (ROS layout, `H x W x C`), while
//! `PatchFeatures` is channels first, so the conversion transposes.
use anyhow::{ensure, Result};

use crate::msg::{Encoding, Header, Image};
use crate::temporal::{AnomalyMap, PatchFeatures};

/// Reads the float channels of a `32FC<N>` image (either byte order, any row padding),
/// pixel-interleaved; returns them with N.
fn floats(image: &Image) -> Result<(Vec<f32>, usize)> {
    image.validate()?;
    let Encoding::Float32 { channels } = image.encoding else {
        anyhow::bail!("expected a 32FC<N> image, got {}", image.encoding);
    };
    let row = image.width as usize * 4 * channels as usize;
    let mut out = Vec::with_capacity(row / 4 * image.height as usize);
    for r in image.data.chunks_exact(image.step.max(1) as usize) {
        out.extend(r[..row].chunks_exact(4).map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            match image.is_bigendian {
                true => f32::from_be_bytes(b),
                false => f32::from_le_bytes(b),
            }
        }));
    }
    Ok((out, channels as usize))
}

/// A packed little-endian `32FC<channels>` image of `values` (pixel-interleaved).
fn float_image(
    header: Header,
    width: usize,
    height: usize,
    channels: usize,
    values: &[f32],
) -> Image {
    let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Image::packed(
        header,
        width as u32,
        height as u32,
        Encoding::Float32 {
            channels: channels as u32,
        },
        data,
    )
}

/// The anomaly map of a `32FC1` image (values are not checked; see [`AnomalyMap::check_finite`]).
pub fn map_from_image(image: &Image) -> Result<AnomalyMap> {
    let (values, channels) = floats(image)?;
    ensure!(
        channels == 1,
        "expected a 32FC1 anomaly map, got {}",
        image.encoding
    );
    AnomalyMap::new(image.width as usize, image.height as usize, values)
}

/// A `32FC1` image of `map`.
pub fn map_to_image(header: Header, map: &AnomalyMap) -> Image {
    float_image(header, map.width, map.height, 1, &map.data)
}

/// The patch features of a `32FC<C>` image of the patch grid.
pub fn features_from_image(image: &Image) -> Result<PatchFeatures> {
    let (values, c) = floats(image)?;
    let (h, w) = (image.height as usize, image.width as usize);
    let mut chw = vec![0f32; values.len()];
    for (p, pixel) in values.chunks_exact(c).enumerate() {
        for (k, v) in pixel.iter().enumerate() {
            chw[k * h * w + p] = *v;
        }
    }
    PatchFeatures::new(c, h, w, chw)
}

/// A `32FC<C>` image of the patch grid holding `features`.
pub fn features_to_image(header: Header, features: &PatchFeatures) -> Image {
    let (c, hw) = (features.channels, features.grid_h * features.grid_w);
    let mut hwc = vec![0f32; c * hw];
    for k in 0..c {
        for p in 0..hw {
            hwc[p * c + k] = features.data[k * hw + p];
        }
    }
    float_image(header, features.grid_w, features.grid_h, c, &hwc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip_through_the_interleaved_layout() {
        let f = PatchFeatures::new(3, 2, 4, (0..24).map(|i| i as f32).collect()).unwrap();
        let image = features_to_image(Header::default(), &f);
        assert_eq!(image.encoding, Encoding::Float32 { channels: 3 });
        // Pixel (0, 0) holds channel 0, 1, 2 values 0, 8, 16.
        let first: Vec<f32> = image.data[..12]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(first, [0.0, 8.0, 16.0]);
        assert_eq!(features_from_image(&image).unwrap(), f);
    }

    #[test]
    fn big_endian_padded_maps_read_and_wrong_channels_fail() {
        let mut image = Image::packed(
            Header::default(),
            2,
            1,
            Encoding::Float32 { channels: 1 },
            vec![],
        );
        image.is_bigendian = true;
        image.step = 12; // one padding float per row
        image.data = [0.25f32, 0.5, 9.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        assert_eq!(map_from_image(&image).unwrap().data, [0.25, 0.5]);
        let f = PatchFeatures::new(2, 1, 1, vec![1.0, 2.0]).unwrap();
        let err = map_from_image(&features_to_image(Header::default(), &f)).unwrap_err();
        assert!(err.to_string().contains("32FC1"), "{err}");
    }
}
