//! `sensor_msgs/Image`: camera frames, ground-truth masks, anomaly maps and feature maps.
use std::fmt;

use anyhow::{bail, ensure, Context, Result};
use image::{GrayImage, RgbImage};

use super::std_msgs::{header_dependency, Header};
use super::{Cdr, CdrReader, CdrWriter, Message, MessageType};

/// Largest accepted width or height; larger images are treated as hostile.
pub const MAX_IMAGE_DIMENSION: u32 = 1 << 15;
/// Largest accepted `data` size (1 GiB): a 1920x1080 32FC1 map is 8 MiB, a 16x16 32FC1024 one 1 MiB.
pub const MAX_IMAGE_BYTES: usize = 1 << 30;
/// Most channels of a `32FC<N>` feature map.
pub const MAX_FLOAT_CHANNELS: u32 = 8192;

/// The pixel encodings we read and write (a subset of ROS `sensor_msgs/image_encodings.hpp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `rgb8`: red, green, blue bytes.
    Rgb8,
    /// `bgr8`: blue, green, red bytes (OpenCV order).
    Bgr8,
    /// `rgba8`: RGB plus alpha.
    Rgba8,
    /// `bgra8`: BGR plus alpha.
    Bgra8,
    /// `mono8` (alias `8UC1`): one byte, grey or a semantic id.
    Mono8,
    /// `mono16` (alias `16UC1`): one 16-bit channel.
    Mono16,
    /// `32FC<N>`: N float32 channels (`32FC1` anomaly maps, `32FC1024` feature maps).
    Float32 {
        /// N, 1 to [`MAX_FLOAT_CHANNELS`].
        channels: u32,
    },
}

impl Encoding {
    /// Parses a ROS encoding string; unknown ones are errors naming what is accepted.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "rgb8" => Self::Rgb8,
            "bgr8" => Self::Bgr8,
            "rgba8" => Self::Rgba8,
            "bgra8" => Self::Bgra8,
            "mono8" | "8UC1" => Self::Mono8,
            "mono16" | "16UC1" => Self::Mono16,
            _ => match s.strip_prefix("32FC").map(str::parse::<u32>) {
                Some(Ok(channels)) if (1..=MAX_FLOAT_CHANNELS).contains(&channels) => {
                    Self::Float32 { channels }
                }
                _ => bail!(
                    "unknown image encoding {s:?} (accepted: rgb8, bgr8, rgba8, bgra8, mono8, \
                     mono16, 32FC1..32FC{MAX_FLOAT_CHANNELS})"
                ),
            },
        })
    }

    /// Bytes per pixel (all channels).
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Self::Mono8 => 1,
            Self::Mono16 => 2,
            Self::Rgb8 | Self::Bgr8 => 3,
            Self::Rgba8 | Self::Bgra8 => 4,
            Self::Float32 { channels } => 4 * channels as usize,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rgb8 => f.write_str("rgb8"),
            Self::Bgr8 => f.write_str("bgr8"),
            Self::Rgba8 => f.write_str("rgba8"),
            Self::Bgra8 => f.write_str("bgra8"),
            Self::Mono8 => f.write_str("mono8"),
            Self::Mono16 => f.write_str("mono16"),
            Self::Float32 { channels } => write!(f, "32FC{channels}"),
        }
    }
}

/// `sensor_msgs/msg/Image`: an uncompressed image, rows of `step` bytes.
///
/// `D` holds the pixels: an owned `Vec<u8>` by default, or a slice of a received buffer
/// ([`ImageRef`], from [`Image::decode_ref`]) so reading a bag needs no pixel copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image<D = Vec<u8>> {
    /// Capture time and camera frame.
    pub header: Header,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// Pixel layout.
    pub encoding: Encoding,
    /// Byte order of multi-byte channels (mono16, 32FC*).
    pub is_bigendian: bool,
    /// Row length in bytes (>= width * bytes per pixel).
    pub step: u32,
    /// `step * height` bytes.
    pub data: D,
}

/// An [`Image`] whose pixels are borrowed from a CDR buffer.
pub type ImageRef<'a> = Image<&'a [u8]>;

impl Image {
    /// A tightly packed rgb8 image.
    pub fn from_rgb8(header: Header, img: &RgbImage) -> Self {
        Self::packed(
            header,
            img.width(),
            img.height(),
            Encoding::Rgb8,
            img.to_vec(),
        )
    }

    /// A tightly packed mono8 image (e.g. a mask of semantic ids).
    pub fn from_mono8(header: Header, img: &GrayImage) -> Self {
        Self::packed(
            header,
            img.width(),
            img.height(),
            Encoding::Mono8,
            img.to_vec(),
        )
    }

    /// A tightly packed little-endian image; `data` must hold `width * height` pixels.
    pub fn packed(header: Header, width: u32, height: u32, enc: Encoding, data: Vec<u8>) -> Self {
        Self {
            header,
            height,
            width,
            encoding: enc,
            is_bigendian: false,
            step: (width as usize * enc.bytes_per_pixel()) as u32,
            data,
        }
    }
}

impl<D: AsRef<[u8]>> Image<D> {
    /// Checks the size limits and that `step` and `data` agree with width, height and encoding.
    pub fn validate(&self) -> Result<()> {
        let expected = self.data_len()?;
        let data = self.data.as_ref();
        ensure!(
            data.len() == expected,
            "image data is {} bytes but step {} x height {} = {expected}",
            data.len(),
            self.step,
            self.height
        );
        Ok(())
    }

    /// The `data` size that width, height, step and encoding call for, within the limits.
    fn data_len(&self) -> Result<usize> {
        let (w, h) = (self.width, self.height);
        ensure!(
            w <= MAX_IMAGE_DIMENSION && h <= MAX_IMAGE_DIMENSION,
            "image {w}x{h} exceeds the {MAX_IMAGE_DIMENSION}-pixel dimension limit"
        );
        let row = w as usize * self.encoding.bytes_per_pixel();
        ensure!(
            self.step as usize >= row,
            "image step {} is below width {w} x {} bytes per pixel ({})",
            self.step,
            self.encoding.bytes_per_pixel(),
            self.encoding
        );
        let expected = self.step as usize * h as usize;
        ensure!(
            expected <= MAX_IMAGE_BYTES,
            "image of {expected} bytes exceeds the {MAX_IMAGE_BYTES}-byte limit"
        );
        Ok(expected)
    }

    /// Rows without their padding, `width * bytes_per_pixel` bytes each.
    fn rows(&self) -> impl Iterator<Item = &[u8]> {
        let row = self.width as usize * self.encoding.bytes_per_pixel();
        self.data
            .as_ref()
            .chunks_exact(self.step.max(1) as usize)
            .map(move |r| &r[..row])
    }

    /// Converts an 8-bit colour or grey frame (rgb8, bgr8, rgba8, bgra8, mono8) to RGB8.
    pub fn to_rgb8(&self) -> Result<RgbImage> {
        self.validate()?;
        let mut out = Vec::with_capacity(self.width as usize * self.height as usize * 3);
        for row in self.rows() {
            match self.encoding {
                Encoding::Rgb8 => out.extend_from_slice(row),
                Encoding::Bgr8 => row
                    .chunks_exact(3)
                    .for_each(|p| out.extend_from_slice(&[p[2], p[1], p[0]])),
                Encoding::Rgba8 => row
                    .chunks_exact(4)
                    .for_each(|p| out.extend_from_slice(&p[..3])),
                Encoding::Bgra8 => row
                    .chunks_exact(4)
                    .for_each(|p| out.extend_from_slice(&[p[2], p[1], p[0]])),
                Encoding::Mono8 => row.iter().for_each(|&v| out.extend_from_slice(&[v, v, v])),
                other => bail!("cannot convert a {other} image to RGB8"),
            }
        }
        RgbImage::from_raw(self.width, self.height, out).ok_or_else(|| {
            anyhow::anyhow!("RGB8 buffer does not match {}x{}", self.width, self.height)
        })
    }

    /// Returns a mono8 image (a mask) as a grey image; other encodings are errors.
    pub fn to_mono8(&self) -> Result<GrayImage> {
        self.validate()?;
        ensure!(
            self.encoding == Encoding::Mono8,
            "expected a mono8 image, got {}",
            self.encoding
        );
        let data: Vec<u8> = self.rows().flatten().copied().collect();
        GrayImage::from_raw(self.width, self.height, data).ok_or_else(|| {
            anyhow::anyhow!("mono8 buffer does not match {}x{}", self.width, self.height)
        })
    }

    /// An owned copy (one copy of the pixels).
    pub fn into_owned(self) -> Image {
        Image {
            header: self.header,
            height: self.height,
            width: self.width,
            encoding: self.encoding,
            is_bigendian: self.is_bigendian,
            step: self.step,
            data: self.data.as_ref().to_vec(),
        }
    }
}

impl<'a> ImageRef<'a> {
    /// Decodes and validates a full CDR buffer, borrowing the pixels from it.
    pub fn decode_ref(buf: &'a [u8]) -> Result<Self> {
        let mut r = CdrReader::new(buf)?;
        Self::read_ref(&mut r).with_context(|| format!("decoding {}", Image::TYPE.name))
    }

    fn read_ref(r: &mut CdrReader<'a>) -> Result<Self> {
        let header = Header::read(r)?;
        let height = r.u32()?;
        let width = r.u32()?;
        let encoding = Encoding::parse(&r.string()?)?;
        let is_bigendian = r.u8()? != 0;
        let step = r.u32()?;
        let data = r.bytes()?;
        let image = Self {
            header,
            height,
            width,
            encoding,
            is_bigendian,
            step,
            data,
        };
        // Geometry and limits are checked before anyone copies the pixels.
        image.validate()?;
        Ok(image)
    }
}

impl Cdr for Image {
    fn write(&self, w: &mut CdrWriter) {
        self.header.write(w);
        w.u32(self.height);
        w.u32(self.width);
        w.string(&self.encoding.to_string());
        w.u8(u8::from(self.is_bigendian));
        w.u32(self.step);
        w.bytes(&self.data);
    }

    fn read(r: &mut CdrReader) -> Result<Self> {
        ImageRef::read_ref(r).map(ImageRef::into_owned)
    }
}

impl Message for Image {
    const TYPE: MessageType = MessageType {
        name: "sensor_msgs/msg/Image",
        definition: concat!(
            "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n",
            "uint8 is_bigendian\nuint32 step\nuint8[] data\n",
            header_dependency!()
        ),
        hash: "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
    };

    fn size_hint(&self) -> usize {
        64 + self.header.frame_id.len() + self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Time;

    fn sample(enc: Encoding, w: u32, h: u32) -> Image {
        let n = w as usize * h as usize * enc.bytes_per_pixel();
        let header = Header {
            stamp: Time { sec: 3, nanosec: 4 },
            frame_id: "camera".into(),
        };
        Image::packed(header, w, h, enc, (0..n).map(|i| (i * 7) as u8).collect())
    }

    #[test]
    fn every_encoding_round_trips() {
        for enc in [
            Encoding::Rgb8,
            Encoding::Bgr8,
            Encoding::Rgba8,
            Encoding::Bgra8,
            Encoding::Mono8,
            Encoding::Mono16,
            Encoding::Float32 { channels: 1 },
            Encoding::Float32 { channels: 1024 },
        ] {
            let img = sample(enc, 3, 2);
            assert_eq!(Encoding::parse(&enc.to_string()).unwrap(), enc);
            assert_eq!(Image::decode(&img.encode()).unwrap(), img, "{enc}");
        }
    }

    #[test]
    fn unknown_encoding_and_bad_sizes_are_errors() {
        let mut img = sample(Encoding::Rgb8, 3, 2);
        let buf = img.encode();
        let err = |b: &[u8]| format!("{:#}", Image::decode(b).unwrap_err());

        let mut bad = buf.clone();
        let at = buf.windows(4).position(|w| w == b"rgb8").unwrap();
        bad[at..at + 4].copy_from_slice(b"yuv8");
        assert!(err(&bad).contains("unknown image encoding \"yuv8\""));

        img.data.pop();
        assert!(err(&img.encode()).contains("image data is 17 bytes but step 9 x height 2 = 18"));

        let mut img = sample(Encoding::Rgb8, 3, 2);
        img.step = 8;
        img.data.truncate(16);
        assert!(err(&img.encode()).contains("step 8 is below width 3"));

        for n in 0..buf.len() {
            assert!(Image::decode(&buf[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn borrowed_decode_shares_the_buffer_and_matches_owned() {
        let img = sample(Encoding::Bgr8, 5, 3);
        let buf = img.encode();
        let view = Image::decode_ref(&buf).unwrap();
        let range = buf.as_ptr_range();
        assert!(range.contains(&view.data.as_ptr()), "pixels are not copied");
        assert_eq!(view.to_rgb8().unwrap(), img.to_rgb8().unwrap());
        assert_eq!(view.into_owned(), img);
    }

    #[test]
    fn hostile_sizes_are_rejected_without_allocating() {
        let mut img = sample(Encoding::Rgb8, 1, 1);
        img.width = MAX_IMAGE_DIMENSION;
        img.height = MAX_IMAGE_DIMENSION;
        img.step = 3 * MAX_IMAGE_DIMENSION;
        let msg = format!("{:#}", Image::decode(&img.encode()).unwrap_err());
        assert!(msg.contains("exceeds"), "{msg}");
    }

    #[test]
    fn colour_orders_convert_to_rgb_and_padding_is_dropped() {
        let header = Header::default();
        let mut bgr = Image::packed(header.clone(), 2, 1, Encoding::Bgr8, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(bgr.to_rgb8().unwrap().into_raw(), [3, 2, 1, 6, 5, 4]);
        bgr.step = 8;
        bgr.data = vec![1, 2, 3, 4, 5, 6, 99, 99];
        assert_eq!(bgr.to_rgb8().unwrap().into_raw(), [3, 2, 1, 6, 5, 4]);
        let bgra = Image::packed(header.clone(), 1, 1, Encoding::Bgra8, vec![1, 2, 3, 4]);
        assert_eq!(bgra.to_rgb8().unwrap().into_raw(), [3, 2, 1]);
        let rgba = Image::packed(header.clone(), 1, 1, Encoding::Rgba8, vec![1, 2, 3, 4]);
        assert_eq!(rgba.to_rgb8().unwrap().into_raw(), [1, 2, 3]);
        let mono = Image::packed(header.clone(), 2, 1, Encoding::Mono8, vec![7, 9]);
        assert_eq!(mono.to_rgb8().unwrap().into_raw(), [7, 7, 7, 9, 9, 9]);
        assert_eq!(mono.to_mono8().unwrap().into_raw(), [7, 9]);
        let f = Image::packed(header, 1, 1, Encoding::Float32 { channels: 1 }, vec![0; 4]);
        assert!(f.to_rgb8().is_err());
    }
}
