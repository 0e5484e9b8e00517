//! The field names of HTTP/2 header blocks (RFC 7541), for the
//! pseudo-header rules h2 does not keep: h2 refuses a misplaced
//! pseudo-header in a request's header section, but drops a trailer
//! section's without a word (RFC 9113 §8.1 makes it malformed). The HTTP/2
//! shim reads each of the client's header blocks here on its way to h2.
//!
//! Names only: values are skipped by their length, except that an entry
//! added to the dynamic table is sized (RFC 7541 §4.1: name and value
//! lengths, decoded, plus 32) so that the table's evictions, and so every
//! later index, stay in step with h2's decoder. Each entry keeps only what
//! its name is ([`Name`]). A block this reader cannot follow (bad index,
//! bad Huffman code, a size update over the limit) is one h2 refuses too
//! (`COMPRESSION_ERROR`, a connection error); the reader then stops.

use std::collections::VecDeque;

use super::huffman;
use super::pseudo::{name_of, Name};
use super::qpack::{prefixed_int, string};

/// RFC 7541 §4.1: an entry's size counts 32 bytes of overhead.
const ENTRY_OVERHEAD: usize = 32;

/// Why a block could not be followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// Cut short inside a representation.
    Truncated,
    /// Index 0, or past the static and dynamic tables.
    BadIndex,
    /// A Huffman-coded string that does not decode.
    BadHuffman,
    /// A dynamic table size update above the limit we advertised.
    TableTooLarge,
}

/// The decoder side of one connection's dynamic table, names only.
#[derive(Debug)]
pub struct NameTable {
    /// Newest first (index 62 is the front): the name, its length (what
    /// an insertion naming this entry counts) and the entry's size.
    entries: VecDeque<(Name, usize, usize)>,
    size: usize,
    /// Current maximum size (changed by size updates).
    max: usize,
    /// SETTINGS_HEADER_TABLE_SIZE we advertised: updates may not exceed it.
    limit: usize,
}

impl NameTable {
    /// A connection's table; `limit` is our SETTINGS_HEADER_TABLE_SIZE (4,096
    /// unless we advertise another).
    pub fn new(limit: usize) -> NameTable {
        NameTable {
            entries: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
        }
    }

    /// The table's current size and maximum (RFC 7541 §4.1, §4.2).
    pub fn size(&self) -> (usize, usize) {
        (self.size, self.max)
    }

    /// The field names of one complete header block, in order; the table
    /// follows every insertion and size update in it.
    pub fn block(&mut self, block: &[u8]) -> Result<Vec<Name>, HpackError> {
        let mut rest = block;
        let mut names = Vec::new();
        while let Some(&first) = rest.first() {
            let used = if first & 0x80 != 0 {
                // Indexed header field (§6.1).
                let (index, n) = int(rest, 7)?;
                names.push(self.name_at(index)?);
                n
            } else if first & 0xC0 == 0x40 {
                // Literal with incremental indexing (§6.2.1).
                let (name, name_len, n) = self.literal_name(rest, 6)?;
                let (value_len, m) = decoded_len(rest.get(n..).ok_or(HpackError::Truncated)?)?;
                self.insert(name, name_len, name_len + value_len + ENTRY_OVERHEAD);
                names.push(name);
                n + m
            } else if first & 0xE0 == 0x20 {
                // Dynamic table size update (§6.3).
                let (size, n) = int(rest, 5)?;
                let size = usize::try_from(size).map_err(|_| HpackError::TableTooLarge)?;
                if size > self.limit {
                    return Err(HpackError::TableTooLarge);
                }
                self.max = size;
                self.evict();
                n
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let (name, _, n) = self.literal_name(rest, 4)?;
                let (_, m) = raw_string(rest.get(n..).ok_or(HpackError::Truncated)?)?;
                names.push(name);
                n + m
            };
            rest = rest.get(used..).ok_or(HpackError::Truncated)?;
        }
        Ok(names)
    }

    /// The name a literal representation gives (an index in the low `bits`,
    /// or 0 and a literal name), its length, and the bytes used.
    fn literal_name(&self, rest: &[u8], bits: u32) -> Result<(Name, usize, usize), HpackError> {
        let (index, n) = int(rest, bits)?;
        if index != 0 {
            let (name, len) = self.name_and_len_at(index)?;
            return Ok((name, len, n));
        }
        let (raw, huffman, m) =
            string(rest.get(n..).ok_or(HpackError::Truncated)?, 7).ok_or(HpackError::Truncated)?;
        let name = if huffman {
            huffman::decode(raw).ok_or(HpackError::BadHuffman)?
        } else {
            raw.to_vec()
        };
        Ok((name_of(&name), name.len(), n + m))
    }

    fn name_at(&self, index: u64) -> Result<Name, HpackError> {
        self.name_and_len_at(index).map(|(name, _)| name)
    }

    /// The name at `index` and its length in bytes (what an insertion
    /// referring to it counts).
    fn name_and_len_at(&self, index: u64) -> Result<(Name, usize), HpackError> {
        let index = usize::try_from(index).map_err(|_| HpackError::BadIndex)?;
        if let Some(&name) = STATIC_NAMES.get(index.wrapping_sub(1)) {
            return Ok((name_of(name.as_bytes()), name.len()));
        }
        let dynamic = index
            .checked_sub(STATIC_NAMES.len() + 1)
            .ok_or(HpackError::BadIndex)?;
        let (name, len, _) = self.entries.get(dynamic).ok_or(HpackError::BadIndex)?;
        Ok((*name, *len))
    }

    fn insert(&mut self, name: Name, name_len: usize, size: usize) {
        if size > self.max {
            // §4.4: an entry larger than the table empties it.
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.entries.push_front((name, name_len, size));
        self.size += size;
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max {
            match self.entries.pop_back() {
                Some((_, _, s)) => self.size -= s,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

fn int(buf: &[u8], bits: u32) -> Result<(u64, usize), HpackError> {
    prefixed_int(buf, bits).ok_or(HpackError::Truncated)
}

/// A string literal's raw bytes and the bytes used.
fn raw_string(buf: &[u8]) -> Result<(&[u8], usize), HpackError> {
    let (raw, _, n) = string(buf, 7).ok_or(HpackError::Truncated)?;
    Ok((raw, n))
}

/// A string literal's decoded length and the bytes used.
fn decoded_len(buf: &[u8]) -> Result<(usize, usize), HpackError> {
    let (raw, huffman, n) = string(buf, 7).ok_or(HpackError::Truncated)?;
    let len = if huffman {
        huffman::decode(raw).ok_or(HpackError::BadHuffman)?.len()
    } else {
        raw.len()
    };
    Ok((len, n))
}

/// RFC 7541 Appendix A: the static table's names, index 1 first.
const STATIC_NAMES: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pseudo::Pseudo;

    fn lit(flag: u8, name: &str, value: &str) -> Vec<u8> {
        let mut b = vec![flag, name.len() as u8];
        b.extend_from_slice(name.as_bytes());
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
        b
    }

    /// RFC 7541 C.3: three requests, the table carried between them.
    #[test]
    fn rfc7541_c3_requests_keep_the_table_in_step() {
        let mut t = NameTable::new(4096);
        let c31 = hex("828684410f7777772e6578616d706c652e636f6d");
        let names = t.block(&c31).expect("C.3.1");
        assert_eq!(names.len(), 4);
        assert_eq!(t.size, 57);
        let c32 = hex("828684be58086e6f2d6361636865");
        let names = t.block(&c32).expect("C.3.2");
        assert_eq!(
            names[3],
            Name::Pseudo(Pseudo::Authority),
            "index 62: the dynamic entry"
        );
        assert_eq!(names[4], Name::Regular);
        assert_eq!(t.size, 110);
        let c33 = hex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565");
        let names = t.block(&c33).expect("C.3.3");
        assert_eq!(
            names[3],
            Name::Pseudo(Pseudo::Authority),
            "index 63 after one more insert"
        );
        assert_eq!(t.size, 164);
    }

    /// RFC 7541 C.4: the same with Huffman-coded strings.
    #[test]
    fn rfc7541_c4_huffman_sizes_are_decoded_sizes() {
        let mut t = NameTable::new(4096);
        t.block(&hex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
            .expect("C.4.1");
        assert_eq!(t.size, 57);
        t.block(&hex("828684be5886a8eb10649cbf")).expect("C.4.2");
        assert_eq!(t.size, 110);
        t.block(&hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"))
            .expect("C.4.3");
        assert_eq!(t.size, 164);
    }

    /// RFC 7541 C.5: a 256-byte table evicts the oldest entries.
    #[test]
    fn rfc7541_c5_eviction_moves_the_indices() {
        let mut t = NameTable::new(256);
        let r1 = hex("4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d");
        t.block(&r1).expect("C.5.1");
        assert_eq!(t.size, 222);
        t.block(&hex("4803333037c1c0bf")).expect("C.5.2");
        assert_eq!(t.size, 222);
        assert_eq!(
            t.entries.front().map(|e| e.0),
            Some(Name::Pseudo(Pseudo::Status))
        );
    }

    #[test]
    fn a_pseudo_header_hidden_behind_a_dynamic_index_is_found() {
        let mut t = NameTable::new(4096);
        // The header section inserts `:path: /x`, the trailers refer to it.
        let mut headers = vec![0x82, 0x87];
        headers.extend(lit(0x40, ":path", "/x"));
        t.block(&headers).expect("headers");
        let names = t.block(&[0xbe]).expect("trailers");
        assert_eq!(names, [Name::Pseudo(Pseudo::Path)]);
        assert!(crate::wire::pseudo::check(&names, true).is_err());
        // A literal name never indexed, and a regular one.
        let names = t
            .block(&lit(0x10, ":authority", "x"))
            .expect("never indexed");
        assert_eq!(names, [Name::Pseudo(Pseudo::Authority)]);
        let names = t.block(&lit(0x00, "x-trailer", "1")).expect("regular");
        assert_eq!(names, [Name::Regular]);
    }

    #[test]
    fn blocks_it_cannot_follow_are_errors() {
        let mut t = NameTable::new(4096);
        assert_eq!(t.block(&[0x80]), Err(HpackError::BadIndex));
        assert_eq!(t.block(&[0xbe]), Err(HpackError::BadIndex));
        assert_eq!(t.block(&[0x3f, 0xe2, 0x1f]), Err(HpackError::TableTooLarge));
        assert_eq!(t.block(&[0x40, 0x85, 0xff]), Err(HpackError::Truncated));
        assert_eq!(
            t.block(&[0x40, 0x81, 0x00, 0x00]),
            Err(HpackError::BadHuffman)
        );
        // A size update to 0 empties the table.
        t.block(&lit(0x40, "a", "b")).expect("insert");
        t.block(&[0x20]).expect("update to 0");
        assert_eq!(t.block(&[0xbe]), Err(HpackError::BadIndex));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }
}
