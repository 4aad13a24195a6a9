//! The `.npy` header, read and checked before any data is: a header is a few bytes anyone can
//! write, and its shape must not decide how much memory a reader allocates.
use std::io::Read;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

/// What an `.npy` header says about the array that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// The dtype string, e.g. `<f4`.
    pub descr: String,
    /// Bytes per element, from `descr`.
    pub item_size: usize,
    /// Array shape (C order).
    pub shape: Vec<usize>,
    /// Where the data starts in the file.
    pub data_offset: u64,
}

impl NpyHeader {
    /// Number of elements, `None` on overflow.
    pub fn elements(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }
}

/// Reads the header of `path` and checks that the file holds exactly the data it announces
/// (C order, a known element size). Reads no data.
pub fn read_header(path: &Path) -> Result<NpyHeader> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let header = parse_header(&mut file)
        .with_context(|| format!("{} is not a valid .npy file", path.display()))?;
    let data_len = file_len.saturating_sub(header.data_offset);
    let expected = header
        .elements()
        .and_then(|n| n.checked_mul(header.item_size))
        .map(|b| b as u64);
    if expected != Some(data_len) {
        bail!(
            "{}: its header announces shape {:?} of {} ({}), but the file holds {data_len} bytes of data",
            path.display(),
            header.shape,
            header.descr,
            match expected {
                Some(b) => format!("{b} bytes"),
                None => "more bytes than addressable".to_string(),
            }
        );
    }
    Ok(header)
}

fn parse_header(r: &mut impl Read) -> Result<NpyHeader> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .context("shorter than the .npy magic")?;
    ensure!(&magic[..6] == b"\x93NUMPY", "no .npy magic");
    let (len, prefix) = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).context("truncated header")?;
            (u16::from_le_bytes(b) as usize, 10u64)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).context("truncated header")?;
            (u32::from_le_bytes(b) as usize, 12u64)
        }
        v => bail!("unsupported .npy version {v}"),
    };
    ensure!(len <= 1 << 16, "header of {len} bytes is implausibly long");
    let mut text = vec![0u8; len];
    r.read_exact(&mut text).context("truncated header")?;
    let text = String::from_utf8_lossy(&text);
    let descr = quoted_value(&text, "descr").context("header has no 'descr'")?;
    let fortran = value_after(&text, "fortran_order")
        .context("header has no 'fortran_order'")?
        .starts_with("True");
    ensure!(!fortran, "Fortran-order arrays are not supported");
    let shape_text = value_after(&text, "shape").context("header has no 'shape'")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(inner, _)| inner)
        .context("unreadable 'shape'")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .with_context(|| format!("unreadable shape entry {d:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let item_size = descr
        .trim_start_matches(['<', '>', '|', '='])
        .get(1..)
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .with_context(|| format!("unknown dtype {descr:?}"))?;
    Ok(NpyHeader {
        descr,
        item_size,
        shape,
        data_offset: prefix + len as u64,
    })
}

/// The text after `'key':`, left-trimmed.
fn value_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(&format!("'{key}'"))? + key.len() + 2;
    Some(text[at..].trim_start().strip_prefix(':')?.trim_start())
}

/// The quoted string after `'key':`.
fn quoted_value(text: &str, key: &str) -> Option<String> {
    let rest = value_after(text, key)?;
    let q = rest.chars().next().filter(|&c| c == '\'' || c == '"')?;
    let rest = &rest[1..];
    Some(rest[..rest.find(q)?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: usize) -> Vec<u8> {
        let mut h = header.to_string();
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend(std::iter::repeat(0u8).take(data));
        out
    }

    #[test]
    fn header_is_parsed_and_checked_against_the_file_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
        std::fs::write(&p, npy(h, 48)).unwrap();
        let header = read_header(&p).unwrap();
        assert_eq!(
            (header.shape, header.item_size, header.data_offset),
            (vec![3, 4], 4, 128)
        );
        std::fs::write(&p, npy(h, 47)).unwrap();
        assert!(read_header(&p)
            .unwrap_err()
            .to_string()
            .contains("47 bytes"));
        let huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (131072, 131072), }";
        std::fs::write(&p, npy(huge, 0)).unwrap();
        let err = read_header(&p).unwrap_err().to_string();
        assert!(err.contains("[131072, 131072]"), "{err}");
        let overflow =
            "{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615, 2), }";
        std::fs::write(&p, npy(overflow, 0)).unwrap();
        assert!(read_header(&p).is_err());
    }
}
