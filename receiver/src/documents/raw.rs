//! An upstream document's bytes as the receiver keeps them between their fetch and the requests
//! that ask for them (`GET /api/v1/environment-document/`, the snapshot, the redb row).
//!
//! A document with many identity overrides is tens of MiB of JSON, most of it repeated keys, and
//! it is asked for rarely (SDKs in local evaluation poll it every minute or so) while evaluation
//! reads only the parsed form. Above [`COMPRESS_ABOVE`] bytes it is kept compressed (LZ4, several
//! times smaller on such JSON, decompressed at GiB/s); below, as it came, so that serving a small
//! document costs a pointer copy.

use bytes::Bytes;

/// Documents larger than this are kept compressed.
pub const COMPRESS_ABOVE: usize = 1 << 20;

/// A document's bytes, exactly as the upstream sent them when read back.
#[derive(Clone)]
pub struct DocumentBytes(Kept);

#[derive(Clone)]
enum Kept {
    AsSent(Bytes),
    /// LZ4 block with the original size in front.
    Compressed(Bytes),
}

impl DocumentBytes {
    pub fn new(raw: Bytes) -> DocumentBytes {
        if raw.len() <= COMPRESS_ABOVE {
            return DocumentBytes(Kept::AsSent(raw));
        }
        let compressed = lz4_flex::compress_prepend_size(&raw);
        DocumentBytes(Kept::Compressed(Bytes::from(compressed)))
    }

    /// The bytes as the upstream sent them.
    pub fn bytes(&self) -> Bytes {
        match &self.0 {
            Kept::AsSent(raw) => raw.clone(),
            Kept::Compressed(compressed) => Bytes::from(
                lz4_flex::decompress_size_prepended(compressed)
                    .expect("the receiver compressed these bytes itself"),
            ),
        }
    }

    /// How many bytes are held in memory.
    pub fn held_len(&self) -> usize {
        match &self.0 {
            Kept::AsSent(raw) | Kept::Compressed(raw) => raw.len(),
        }
    }
}

impl std::fmt::Debug for DocumentBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = match self.0 {
            Kept::AsSent(_) => "as sent",
            Kept::Compressed(_) => "compressed",
        };
        write!(f, "DocumentBytes({} bytes held, {kept})", self.held_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_document_is_held_compressed_and_read_back_exactly() {
        let entry = br#"{"identifier":"user-1","identity_features":[{"enabled":true}]},"#;
        let mut raw = b"{\"identity_overrides\":[".to_vec();
        while raw.len() <= COMPRESS_ABOVE {
            raw.extend_from_slice(entry);
        }
        raw.extend_from_slice(b"{}]}");
        let kept = DocumentBytes::new(Bytes::from(raw.clone()));
        assert!(kept.held_len() < raw.len() / 4, "{kept:?}");
        assert_eq!(kept.bytes(), raw);

        let small = DocumentBytes::new(Bytes::from_static(b"{\"id\":1}"));
        assert_eq!(small.held_len(), 8);
        assert_eq!(small.bytes(), Bytes::from_static(b"{\"id\":1}"));
    }
}
