//! Length checks on MCAP records before the `mcap` crate parses them. Its parser (binrw)
//! reserves a string's or map's declared length before reading it, so a 100-byte record
//! claiming a 4 GiB string would allocate 4 GiB first; here every length prefix must fit in
//! what is left of its record.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{ensure, Context, Result};
use mcap::records::op;

/// One field of a record body, as far as lengths go.
#[derive(Clone, Copy)]
enum Field {
    /// Fixed-size fields, this many bytes together.
    Fixed(usize),
    /// A `u32` byte length and that many bytes (strings, byte arrays, maps of fixed entries).
    Sized32,
    /// A `u64` byte length and that many bytes.
    Sized64,
    /// A `u32` byte length of string-to-string entries, each string itself [`Field::Sized32`].
    StringMap,
}

use Field::{Fixed, Sized32, Sized64, StringMap};

/// The fields of each record type the summary section, an attachment or a chunk may hold
/// (MCAP specification); a Message's data is the rest of its record, so it needs no check.
fn layout(opcode: u8) -> &'static [Field] {
    match opcode {
        op::HEADER => &[Sized32, Sized32],
        op::SCHEMA => &[Fixed(2), Sized32, Sized32, Sized32],
        op::CHANNEL => &[Fixed(4), Sized32, Sized32, StringMap],
        op::CHUNK => &[Fixed(28), Sized32, Sized64],
        op::MESSAGE_INDEX => &[Fixed(2), Sized32],
        op::CHUNK_INDEX => &[Fixed(32), Sized32, Fixed(8), Sized32, Fixed(16)],
        op::ATTACHMENT => &[Fixed(16), Sized32, Sized32, Sized64, Fixed(4)],
        op::ATTACHMENT_INDEX => &[Fixed(40), Sized32, Sized32],
        op::STATISTICS => &[Fixed(42), Sized32],
        op::METADATA => &[Sized32, StringMap],
        op::METADATA_INDEX => &[Fixed(16), Sized32],
        _ => &[],
    }
}

/// Checks that every length inside the body of a record of type `opcode` fits in the body.
pub fn check(opcode: u8, body: &[u8]) -> Result<()> {
    let mut rest = body;
    for &field in layout(opcode) {
        rest = skip(field, rest).with_context(|| {
            format!(
                "MCAP record {opcode:#04x} of {} bytes declares a field longer than itself",
                body.len()
            )
        })?;
    }
    Ok(())
}

/// `rest` after `field`, or an error when the field's length runs past it.
fn skip(field: Field, rest: &[u8]) -> Result<&[u8]> {
    let (len, rest) = match field {
        Fixed(n) => (n as u64, rest),
        Sized32 | StringMap => {
            let (len, rest) = rest.split_first_chunk::<4>().context("truncated length")?;
            (u64::from(u32::from_le_bytes(*len)), rest)
        }
        Sized64 => {
            let (len, rest) = rest.split_first_chunk::<8>().context("truncated length")?;
            (u64::from_le_bytes(*len), rest)
        }
    };
    ensure!(
        len <= rest.len() as u64,
        "a length of {len} with {} bytes left",
        rest.len()
    );
    let (inner, rest) = rest.split_at(len as usize);
    if let StringMap = field {
        let mut entries = inner;
        while !entries.is_empty() {
            entries = skip(Sized32, skip(Sized32, entries)?)?;
        }
    }
    Ok(rest)
}

/// Bytes of a record's opcode and length.
const RECORD_HEADER: u64 = 1 + 8;
/// Bytes of the footer record (header + summary start, summary offset start, CRC) and the
/// closing magic.
const FOOTER: u64 = RECORD_HEADER + 8 + 8 + 4;
const MAGIC: u64 = 8;

/// Largest summary record we read. Summary records are indexes, statistics, schemas and
/// channels (kilobytes); without a cap, one record claiming the whole file would be read whole.
pub const MAX_SUMMARY_RECORD: u64 = 64 << 20;

/// Checks every record of the summary section of the MCAP `file` (`len` bytes), one at a
/// time, so the `mcap` crate's summary reader only parses records whose lengths fit. A file
/// without a footer or summary passes: the summary reader reports those.
pub fn check_summary(file: &mut File, len: u64) -> Result<()> {
    let Some(footer_at) = len.checked_sub(FOOTER + MAGIC) else {
        return Ok(());
    };
    let mut footer = [0u8; FOOTER as usize];
    file.seek(SeekFrom::Start(footer_at))?;
    file.read_exact(&mut footer)?;
    let Some((&[op::FOOTER], rest)) = footer.split_first_chunk::<1>() else {
        return Ok(());
    };
    let start = rest
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    if start == 0 {
        return Ok(());
    }
    ensure!(
        start <= footer_at,
        "the footer places the summary at {start}, past the footer at {footer_at}"
    );
    let mut at = start;
    let mut body = Vec::new();
    while at < footer_at {
        let mut head = [0u8; RECORD_HEADER as usize];
        ensure!(
            footer_at - at >= RECORD_HEADER,
            "summary record at {at} is cut off"
        );
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut head)?;
        let [opcode, length @ ..] = head;
        let length = u64::from_le_bytes(length);
        let left = footer_at - at - RECORD_HEADER;
        ensure!(
            length <= left.min(MAX_SUMMARY_RECORD),
            "summary record at {at} claims {length} bytes ({left} left, at most \
             {MAX_SUMMARY_RECORD} read)"
        );
        body.resize(length as usize, 0);
        file.read_exact(&mut body)?;
        check(opcode, &body).with_context(|| format!("summary record at {at}"))?;
        at += RECORD_HEADER + length;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_the_record_are_errors_and_fitting_ones_pass() {
        // Attachment index: 40 fixed bytes, name "a", media type "".
        let mut body = vec![0u8; 40];
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(b'a');
        body.extend_from_slice(&0u32.to_le_bytes());
        check(op::ATTACHMENT_INDEX, &body).unwrap();
        body[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(check(op::ATTACHMENT_INDEX, &body).is_err());
        // Metadata: name "", then a map of one entry whose value claims 2^32 - 1 bytes.
        let mut body = 0u32.to_le_bytes().to_vec();
        let mut map = 1u32.to_le_bytes().to_vec();
        map.push(b'k');
        map.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(&(map.len() as u32).to_le_bytes());
        body.extend_from_slice(&map);
        assert!(check(op::METADATA, &body).is_err());
        // Unknown opcodes have no layout to check.
        check(0x80, &[1, 2, 3]).unwrap();
    }
}
