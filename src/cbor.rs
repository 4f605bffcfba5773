//! Canonical CTAP2 CBOR (CTAP 2.1 §8 "Message Encoding").
//!
//! The encoder always writes the canonical form: shortest integer and length
//! encodings, definite lengths, and map keys sorted by major type, then encoded
//! length, then bytes. The strict decoder accepts exactly that form and nothing
//! else (no floats, tags, indefinite lengths, duplicate or unsorted keys), which
//! is what a strict authenticator or python-fido2's `strict_cbor` expects. Lengths
//! from the wire are checked against the bytes left before anything is allocated,
//! so a hostile reply cannot make us allocate more than its own size.

use std::cmp::Ordering;
use thiserror::Error;

/// Nesting deeper than this is refused (CTAP messages nest at most 4 levels).
pub const MAX_DEPTH: usize = 16;

/// A CBOR data item of the subset CTAP2 uses.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Major types 0 and 1: every integer from -2^64 to 2^64-1.
    Integer(i128),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    /// Entries as given; [`encode`] sorts them canonically.
    Map(Vec<(Value, Value)>),
    Bool(bool),
    Null,
}

/// Why a byte string is not canonical CTAP2 CBOR.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CborError {
    #[error("CBOR ended early")]
    Truncated,
    #[error("{0} trailing bytes after the CBOR item")]
    TrailingBytes(usize),
    #[error("integer or length not in its shortest form")]
    NonMinimal,
    #[error("map keys out of canonical order or duplicated")]
    KeyOrder,
    #[error("indefinite lengths are not allowed")]
    Indefinite,
    #[error("unsupported CBOR item (major type {major}, info {info})")]
    Unsupported { major: u8, info: u8 },
    #[error("text string is not UTF-8")]
    Utf8,
    #[error("CBOR nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("integer out of range")]
    IntegerRange,
}

impl std::fmt::Debug for Value {
    // Compact, hex for bytes: these appear in test failures and trace logs of
    // *public* protocol fields only; secret-bearing fields are always encrypted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Integer(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "h'{}'", hex::encode(b)),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Array(a) => f.debug_list().entries(a).finish(),
            Value::Map(m) => f
                .debug_map()
                .entries(m.iter().map(|(k, v)| (k, v)))
                .finish(),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Null => f.write_str("null"),
        }
    }
}

impl Value {
    /// A map from `(key, value)` pairs.
    pub fn map<K: Into<Value>, V: Into<Value>>(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The value under `key` in a map, if this is a map that has it.
    pub fn get(&self, key: impl Into<Value>) -> Option<&Value> {
        let key = key.into();
        self.as_map()?
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    pub fn as_map(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_i128(&self) -> Option<i128> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|i| i64::try_from(i).ok())
    }
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|i| u64::try_from(i).ok())
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(i: $t) -> Self { Value::Integer(i as i128) }
        }
    )*};
}
from_int!(u8, u16, u32, u64, usize, i8, i16, i32, i64);

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Bytes(b.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}
impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}

/// Encodes `value` canonically.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends the canonical encoding of `value` to `out`.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Integer(i) if *i >= 0 => head(0, *i as u64, out),
        Value::Integer(i) => head(1, (-1 - *i) as u64, out),
        Value::Bytes(b) => {
            head(2, b.len() as u64, out);
            out.extend_from_slice(b);
        }
        Value::Text(s) => {
            head(3, s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(a) => {
            head(4, a.len() as u64, out);
            a.iter().for_each(|v| encode_into(v, out));
        }
        Value::Map(m) => {
            let mut entries: Vec<(Vec<u8>, &Value)> =
                m.iter().map(|(k, v)| (encode(k), v)).collect();
            entries.sort_by(|a, b| canonical_key_order(&a.0, &b.0));
            head(5, entries.len() as u64, out);
            for (k, v) in entries {
                out.extend_from_slice(&k);
                encode_into(v, out);
            }
        }
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Null => out.push(0xf6),
    }
}

/// CTAP2 canonical key order over *encoded* keys: major type, then length, then bytes.
fn canonical_key_order(a: &[u8], b: &[u8]) -> Ordering {
    (a[0] >> 5)
        .cmp(&(b[0] >> 5))
        .then(a.len().cmp(&b.len()))
        .then(a.cmp(b))
}

fn head(major: u8, n: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Decodes exactly one canonical item that fills all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value, CborError> {
    let (value, rest) = decode_prefix(bytes)?;
    if !rest.is_empty() {
        return Err(CborError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Decodes one canonical item from the front of `bytes` and returns the rest
/// (authenticator data holds a COSE key followed by an extensions map).
pub fn decode_prefix(bytes: &[u8]) -> Result<(Value, &[u8]), CborError> {
    let mut reader = Reader { bytes, pos: 0 };
    let value = reader.item(0)?;
    Ok((value, &bytes[reader.pos..]))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let end = self.pos.checked_add(n).ok_or(CborError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(CborError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        Ok(self.take(1)?[0])
    }

    /// Reads an argument, refusing non-shortest forms.
    fn argument(&mut self, major: u8, info: u8) -> Result<u64, CborError> {
        let (n, min) = match info {
            0..=23 => return Ok(info as u64),
            24 => (self.byte()? as u64, 24),
            25 => (
                u16::from_be_bytes(self.take(2)?.try_into().unwrap()) as u64,
                0x100,
            ),
            26 => (
                u32::from_be_bytes(self.take(4)?.try_into().unwrap()) as u64,
                0x1_0000,
            ),
            27 => (
                u64::from_be_bytes(self.take(8)?.try_into().unwrap()),
                0x1_0000_0000,
            ),
            31 => return Err(CborError::Indefinite),
            _ => return Err(CborError::Unsupported { major, info }),
        };
        if n < min {
            return Err(CborError::NonMinimal);
        }
        Ok(n)
    }

    /// A length that cannot exceed what is left (each element takes at least a byte).
    fn length(&mut self, major: u8, info: u8) -> Result<usize, CborError> {
        let n = self.argument(major, info)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(CborError::Truncated);
        }
        Ok(n as usize)
    }

    fn item(&mut self, depth: usize) -> Result<Value, CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        let initial = self.byte()?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        match major {
            0 => Ok(Value::Integer(self.argument(major, info)? as i128)),
            1 => Ok(Value::Integer(-1 - self.argument(major, info)? as i128)),
            2 => {
                let n = self.length(major, info)?;
                Ok(Value::Bytes(self.take(n)?.to_vec()))
            }
            3 => {
                let n = self.length(major, info)?;
                let s = std::str::from_utf8(self.take(n)?).map_err(|_| CborError::Utf8)?;
                Ok(Value::Text(s.to_owned()))
            }
            4 => {
                let n = self.length(major, info)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            5 => {
                let n = self.length(major, info)?;
                let mut entries = Vec::with_capacity(n);
                let mut previous: Option<&[u8]> = None;
                for _ in 0..n {
                    let start = self.pos;
                    let key = self.item(depth + 1)?;
                    let encoded = &self.bytes[start..self.pos];
                    if let Some(prev) = previous {
                        if canonical_key_order(prev, encoded) != Ordering::Less {
                            return Err(CborError::KeyOrder);
                        }
                    }
                    previous = Some(encoded);
                    let value = self.item(depth + 1)?;
                    entries.push((key, value));
                }
                Ok(Value::Map(entries))
            }
            7 => match info {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 => Ok(Value::Null),
                _ => Err(CborError::Unsupported { major, info }),
            },
            // Tags (major 6) do not occur in CTAP2.
            _ => Err(CborError::Unsupported { major, info }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexed(v: &Value) -> String {
        hex::encode(encode(v))
    }

    #[test]
    fn integers_use_shortest_forms() {
        // RFC 8949 Appendix A examples.
        assert_eq!(hexed(&0.into()), "00");
        assert_eq!(hexed(&23.into()), "17");
        assert_eq!(hexed(&24.into()), "1818");
        assert_eq!(hexed(&1000.into()), "1903e8");
        assert_eq!(hexed(&1_000_000.into()), "1a000f4240");
        assert_eq!(
            hexed(&Value::Integer(u64::MAX as i128)),
            "1bffffffffffffffff"
        );
        assert_eq!(hexed(&(-1).into()), "20");
        assert_eq!(hexed(&(-100).into()), "3863");
        assert_eq!(hexed(&Value::Integer(-(1i128 << 64))), "3bffffffffffffffff");
    }

    #[test]
    fn map_keys_are_sorted_canonically() {
        // COSE key order: 1, 3, -1, -2, -3; text keys by length then bytes.
        let cose = Value::map([(-3, 0), (-1, 1), (3, -7), (1, 2), (-2, 0)]);
        assert_eq!(hexed(&cose), "a501020326200121002200");
        let bytes = encode(&cose);
        let keys: Vec<i128> = decode(&bytes)
            .unwrap()
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_i128().unwrap())
            .collect();
        assert_eq!(keys, vec![1, 3, -1, -2, -3]);
        let opts = Value::map([
            ("uvToken", true),
            ("rk", true),
            ("up", false),
            ("plat", false),
        ]);
        let keys: Vec<String> = decode(&encode(&opts))
            .unwrap()
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_owned())
            .collect();
        assert_eq!(keys, vec!["rk", "up", "plat", "uvToken"]);
    }

    #[test]
    fn round_trips() {
        let v = Value::map([
            (Value::from(1), Value::from(vec![0u8; 300])),
            (Value::from(2), Value::from("päss")),
            (
                Value::from(3),
                Value::Array(vec![Value::Null, true.into(), (-24).into()]),
            ),
        ]);
        assert_eq!(decode(&encode(&v)).unwrap(), v);
    }

    #[test]
    fn strict_decoder_refuses_non_canonical_input() {
        let cases: &[(&str, CborError)] = &[
            ("1817", CborError::NonMinimal),
            ("190017", CborError::NonMinimal),
            ("a2030101 01", CborError::KeyOrder),
            ("a201010101", CborError::KeyOrder),
            ("5f", CborError::Indefinite),
            ("f93c00", CborError::Unsupported { major: 7, info: 25 }),
            ("c000", CborError::Unsupported { major: 6, info: 0 }),
            ("62c328", CborError::Utf8),
            ("5a ffffffff", CborError::Truncated),
            ("9a ffffffff", CborError::Truncated),
            ("0000", CborError::TrailingBytes(1)),
            ("", CborError::Truncated),
        ];
        for (input, want) in cases {
            let bytes = hex::decode(input.replace(' ', "")).unwrap();
            assert_eq!(decode(&bytes).unwrap_err(), *want, "input {input}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let bytes = vec![0x81; 100];
        assert_eq!(decode(&bytes).unwrap_err(), CborError::TooDeep);
    }

    #[test]
    fn prefix_decoding_returns_the_rest() {
        let (v, rest) = decode_prefix(&[0x01, 0xa0]).unwrap();
        assert_eq!(v, Value::from(1));
        assert_eq!(rest, &[0xa0]);
    }
}
