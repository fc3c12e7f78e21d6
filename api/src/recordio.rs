//! RecordIO, the framing of Mesos' streaming responses: `<decimal length>\n<bytes>`.

use bytes::{Buf, Bytes, BytesMut};

/// Frames one record.
pub fn encode(record: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(record.len() + 12);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.extend_from_slice(b"\n");
    out.extend_from_slice(record);
    out.freeze()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordIoError {
    #[error("bad RecordIO length header")]
    BadHeader,
    #[error("RecordIO record of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// Incremental decoder: feed chunks, take whole records.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    max: usize,
}

impl Decoder {
    pub fn new(max_record: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max: max_record,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete record, if one has arrived.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, RecordIoError> {
        let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() > 20 {
                return Err(RecordIoError::BadHeader);
            }
            return Ok(None);
        };
        let len: usize = std::str::from_utf8(&self.buf[..nl])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(RecordIoError::BadHeader)?;
        if len > self.max {
            return Err(RecordIoError::TooLarge(len));
        }
        if self.buf.len() < nl + 1 + len {
            return Ok(None);
        }
        self.buf.advance(nl + 1);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_records_split_across_chunks() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode(b"{\"a\":1}"));
        wire.extend_from_slice(&encode(b"hello"));
        let mut d = Decoder::new(1024);
        let mut got = Vec::new();
        for b in wire.chunks(3) {
            d.feed(b);
            while let Some(r) = d.next_record().expect("valid") {
                got.push(r);
            }
        }
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"{\"a\":1}"),
                Bytes::from_static(b"hello")
            ]
        );
    }

    #[test]
    fn rejects_garbage_header() {
        let mut d = Decoder::new(10);
        d.feed(b"xx\nabc");
        assert_eq!(d.next_record(), Err(RecordIoError::BadHeader));
        let mut d = Decoder::new(10);
        d.feed(b"100\n");
        assert_eq!(d.next_record(), Err(RecordIoError::TooLarge(100)));
    }
}
