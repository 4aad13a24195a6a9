//! XCDR1 ("plain CDR"), the wire format of ROS 2 messages in DDS and in rosbag2.
//!
//! A buffer starts with a 4-byte encapsulation header (`00 01 00 00` little-endian, `00 00 00 00`
//! big-endian); primitives are aligned to their own size, counted from the end of that header;
//! strings are a `u32` length that counts the trailing NUL, the bytes, then the NUL; sequences are a
//! `u32` element count followed by the elements. We write little-endian and read either.
use anyhow::{bail, ensure, Context, Result};

/// Encapsulation header of a little-endian XCDR1 buffer.
const HEADER_LE: [u8; 4] = [0x00, 0x01, 0x00, 0x00];
/// Encapsulation kind byte of a big-endian XCDR1 buffer (`00 00`).
const KIND_BE: u8 = 0x00;
/// Encapsulation kind byte of a little-endian XCDR1 buffer (`00 01`).
const KIND_LE: u8 = 0x01;

/// Appends little-endian XCDR1 to a byte vector.
pub struct CdrWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Where the aligned body starts in `out` (after the encapsulation header).
    origin: usize,
}

impl<'a> CdrWriter<'a> {
    /// Writes the encapsulation header at the end of `out`; `extra` is a capacity hint for the body.
    pub fn new(out: &'a mut Vec<u8>, extra: usize) -> Self {
        out.reserve(HEADER_LE.len() + extra);
        out.extend_from_slice(&HEADER_LE);
        let origin = out.len();
        Self { out, origin }
    }

    fn align(&mut self, n: usize) {
        let pad = (n - (self.out.len() - self.origin) % n) % n;
        self.out.resize(self.out.len() + pad, 0);
    }

    /// A `uint8`/`byte`/`char`.
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    /// A `bool` (one byte, 0 or 1).
    pub fn bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }

    /// A `uint32`.
    pub fn u32(&mut self, v: u32) {
        self.align(4);
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// An `int32`.
    pub fn i32(&mut self, v: i32) {
        self.align(4);
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// A sequence length or string length; CDR caps them at `u32`.
    fn len(&mut self, n: usize) {
        // Vec lengths above 4 GiB cannot be encoded; our size limits keep every message far below.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// A `string`: length including the NUL, the bytes, the NUL.
    pub fn string(&mut self, s: &str) {
        self.len(s.len() + 1);
        self.out.extend_from_slice(s.as_bytes());
        self.out.push(0);
    }

    /// A `uint8[]`: count, then the bytes in one copy.
    pub fn bytes(&mut self, data: &[u8]) {
        self.len(data.len());
        self.out.extend_from_slice(data);
    }

    /// The element count of a sequence of structs (the elements follow).
    pub fn sequence_len(&mut self, n: usize) {
        self.len(n);
    }
}

/// Reads XCDR1 of either byte order; every read checks the remaining length, so truncated or
/// hostile buffers give errors, never panics or unbounded allocations.
pub struct CdrReader<'a> {
    body: &'a [u8],
    pos: usize,
    little_endian: bool,
}

impl<'a> CdrReader<'a> {
    /// Checks the encapsulation header and positions the reader after it.
    pub fn new(buf: &'a [u8]) -> Result<Self> {
        ensure!(
            buf.len() >= 4,
            "CDR buffer of {} bytes is shorter than its 4-byte encapsulation header",
            buf.len()
        );
        let little_endian = match (buf[0], buf[1]) {
            (0, KIND_LE) => true,
            (0, KIND_BE) => false,
            (a, b) => bail!(
                "unsupported CDR encapsulation {a:02x} {b:02x} (expected XCDR1: 00 01 or 00 00)"
            ),
        };
        Ok(Self {
            body: &buf[4..],
            pos: 0,
            little_endian,
        })
    }

    /// Bytes left after the current position.
    pub fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(
            n <= self.remaining(),
            "CDR buffer truncated: need {n} bytes at offset {}, {} left",
            self.pos + 4,
            self.remaining()
        );
        let s = &self.body[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn align(&mut self, n: usize) -> Result<()> {
        let pad = (n - self.pos % n) % n;
        self.take(pad).map(|_| ())
    }

    fn word(&mut self) -> Result<[u8; 4]> {
        self.align(4)?;
        let b = self.take(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    /// A `uint8`.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// A `bool`; any byte other than 0 or 1 is an error.
    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => bail!("invalid CDR bool byte {b}"),
        }
    }

    /// A `uint32`.
    pub fn u32(&mut self) -> Result<u32> {
        let w = self.word()?;
        Ok(if self.little_endian {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })
    }

    /// An `int32`.
    pub fn i32(&mut self) -> Result<i32> {
        self.u32().map(|v| v as i32)
    }

    /// A `string` (UTF-8, NUL-terminated on the wire).
    pub fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        ensure!(len >= 1, "CDR string length 0 lacks its NUL terminator");
        let raw = self.take(len)?;
        let (text, nul) = raw.split_at(len - 1);
        ensure!(nul == [0], "CDR string is not NUL-terminated");
        let text = std::str::from_utf8(text).context("CDR string is not UTF-8")?;
        Ok(text.to_owned())
    }

    /// A `uint8[]`, borrowed from the buffer.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// The element count of a sequence of structs each at least `min_element_size` bytes long;
    /// a count the remaining bytes cannot hold is an error (so callers may reserve that many).
    pub fn sequence_len(&mut self, min_element_size: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        ensure!(
            n.saturating_mul(min_element_size) <= self.remaining(),
            "CDR sequence of {n} elements does not fit in the {} bytes left",
            self.remaining()
        );
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_relative_to_the_body_and_counts_the_nul() {
        let mut buf = Vec::new();
        let mut w = CdrWriter::new(&mut buf, 0);
        w.u8(7);
        w.string("ab");
        w.u32(0x0102_0304);
        assert_eq!(
            buf,
            [0, 1, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, b'a', b'b', 0, 0, 4, 3, 2, 1]
        );
        let mut r = CdrReader::new(&buf).unwrap();
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.string().unwrap(), "ab");
        assert_eq!(r.u32().unwrap(), 0x0102_0304);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn reads_big_endian() {
        let buf = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 2, b'x', 0];
        let mut r = CdrReader::new(&buf).unwrap();
        assert_eq!(r.i32().unwrap(), -2);
        assert_eq!(r.string().unwrap(), "x");
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        assert!(CdrReader::new(&[0, 1]).is_err());
        assert!(CdrReader::new(&[0, 7, 0, 0]).is_err());
        let mut r = CdrReader::new(&[0, 1, 0, 0, 9, 0, 0, 0, b'a']).unwrap();
        assert!(format!("{:#}", r.string().unwrap_err()).contains("truncated"));
        let mut r = CdrReader::new(&[0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert!(r.sequence_len(1).is_err());
        let mut r = CdrReader::new(&[0, 1, 0, 0, 2]).unwrap();
        assert!(r.bool().is_err());
    }
}
