//! Data structures shared by several commands (CTAP 2.1 §6.1 and WebAuthn §5.4)
//! and the reply-shape helpers every command uses.

use super::CtapError;
use crate::cbor::Value;
use std::collections::BTreeMap;

/// Longest user handle (WebAuthn §5.4.3).
pub const MAX_USER_ID_LEN: usize = 64;

/// PublicKeyCredentialRpEntity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RpEntity {
    pub id: String,
    pub name: Option<String>,
}

impl RpEntity {
    pub fn to_cbor(&self) -> Value {
        let mut m = vec![(Value::from("id"), Value::from(self.id.as_str()))];
        if let Some(n) = &self.name {
            m.push((Value::from("name"), Value::from(n.as_str())));
        }
        Value::Map(m)
    }

    pub fn from_cbor(v: &Value, what: &'static str) -> Result<Self, CtapError> {
        Ok(Self {
            id: v
                .get("id")
                .and_then(Value::as_text)
                .ok_or_else(|| malformed(what, "rp.id missing"))?
                .to_owned(),
            name: opt_text(v.get("name"), what, "rp.name")?,
        })
    }
}

/// PublicKeyCredentialUserEntity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserEntity {
    pub id: Vec<u8>,
    pub name: Option<String>,
    pub display_name: Option<String>,
}

impl UserEntity {
    pub fn to_cbor(&self) -> Value {
        let mut m = vec![(Value::from("id"), Value::from(self.id.clone()))];
        if let Some(n) = &self.name {
            m.push((Value::from("name"), Value::from(n.as_str())));
        }
        if let Some(n) = &self.display_name {
            m.push((Value::from("displayName"), Value::from(n.as_str())));
        }
        Value::Map(m)
    }

    pub fn from_cbor(v: &Value, what: &'static str) -> Result<Self, CtapError> {
        Ok(Self {
            id: v
                .get("id")
                .and_then(Value::as_bytes)
                .ok_or_else(|| malformed(what, "user.id missing"))?
                .to_vec(),
            name: opt_text(v.get("name"), what, "user.name")?,
            display_name: opt_text(v.get("displayName"), what, "user.displayName")?,
        })
    }
}

/// PublicKeyCredentialParameters: `{"alg": -7, "type": "public-key"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubKeyCredParam {
    pub alg: i64,
    pub kind: String,
}

impl PubKeyCredParam {
    /// ES256 (COSE -7).
    pub fn es256() -> Self {
        Self {
            alg: -7,
            kind: "public-key".into(),
        }
    }
    /// EdDSA (COSE -8).
    pub fn eddsa() -> Self {
        Self {
            alg: -8,
            kind: "public-key".into(),
        }
    }

    pub fn to_cbor(&self) -> Value {
        Value::map([
            (Value::from("alg"), Value::from(self.alg)),
            (Value::from("type"), Value::from(self.kind.as_str())),
        ])
    }

    pub fn from_cbor(v: &Value, what: &'static str) -> Result<Self, CtapError> {
        Ok(Self {
            alg: v
                .get("alg")
                .and_then(Value::as_i64)
                .ok_or_else(|| malformed(what, "alg"))?,
            kind: v
                .get("type")
                .and_then(Value::as_text)
                .ok_or_else(|| malformed(what, "type"))?
                .to_owned(),
        })
    }
}

/// PublicKeyCredentialDescriptor: `{"id": bytes, "type": "public-key"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialDescriptor {
    pub id: Vec<u8>,
    pub kind: String,
}

impl CredentialDescriptor {
    pub fn public_key(id: Vec<u8>) -> Self {
        Self {
            id,
            kind: "public-key".into(),
        }
    }

    pub fn to_cbor(&self) -> Value {
        Value::map([
            (Value::from("id"), Value::from(self.id.clone())),
            (Value::from("type"), Value::from(self.kind.as_str())),
        ])
    }

    pub fn from_cbor(v: &Value, what: &'static str) -> Result<Self, CtapError> {
        Ok(Self {
            id: v
                .get("id")
                .and_then(Value::as_bytes)
                .ok_or_else(|| malformed(what, "credential id"))?
                .to_vec(),
            kind: v
                .get("type")
                .and_then(Value::as_text)
                .ok_or_else(|| malformed(what, "credential type"))?
                .to_owned(),
        })
    }
}

/// A malformed-reply error naming the command and what is wrong.
pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> CtapError {
    CtapError::Malformed {
        command: what,
        detail: detail.into(),
    }
}

/// The reply map; refuses anything but a map with integer keys (§6: every
/// CTAP2 response is a map keyed by small unsigned integers).
pub(crate) fn reply_map<'a>(v: &'a Value, what: &'static str) -> Result<&'a Value, CtapError> {
    let map = v
        .as_map()
        .ok_or_else(|| malformed(what, "reply is not a map"))?;
    if map.iter().any(|(k, _)| k.as_u64().is_none()) {
        return Err(malformed(what, "reply map has a non-integer key"));
    }
    Ok(v)
}

pub(crate) fn opt_text(
    v: Option<&Value>,
    what: &'static str,
    field: &str,
) -> Result<Option<String>, CtapError> {
    match v {
        None => Ok(None),
        Some(Value::Text(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(what, format!("{field} is not text"))),
    }
}

pub(crate) fn opt_u64(
    map: &Value,
    key: u64,
    what: &'static str,
    field: &str,
) -> Result<Option<u64>, CtapError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| malformed(what, format!("{field} is not an unsigned integer"))),
    }
}

pub(crate) fn opt_bool(
    map: &Value,
    key: u64,
    what: &'static str,
    field: &str,
) -> Result<Option<bool>, CtapError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| malformed(what, format!("{field} is not a boolean"))),
    }
}

pub(crate) fn opt_bytes<'a>(
    map: &'a Value,
    key: u64,
    what: &'static str,
    field: &str,
) -> Result<Option<&'a [u8]>, CtapError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bytes()
            .map(Some)
            .ok_or_else(|| malformed(what, format!("{field} is not a byte string"))),
    }
}

pub(crate) fn req_bytes<'a>(
    map: &'a Value,
    key: u64,
    what: &'static str,
    field: &str,
) -> Result<&'a [u8], CtapError> {
    opt_bytes(map, key, what, field)?.ok_or_else(|| malformed(what, format!("{field} missing")))
}

pub(crate) fn opt_text_array(
    map: &Value,
    key: u64,
    what: &'static str,
    field: &str,
) -> Result<Vec<String>, CtapError> {
    match map.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_text()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed(what, format!("{field} holds a non-text item")))
            })
            .collect(),
        Some(_) => Err(malformed(what, format!("{field} is not an array"))),
    }
}

pub(crate) fn opt_u64_array(
    map: &Value,
    key: u64,
    what: &'static str,
    field: &str,
) -> Result<Vec<u64>, CtapError> {
    match map.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_u64()
                    .ok_or_else(|| malformed(what, format!("{field} holds a non-integer item")))
            })
            .collect(),
        Some(_) => Err(malformed(what, format!("{field} is not an array"))),
    }
}

pub(crate) fn opt_bool_map(
    map: &Value,
    key: u64,
    what: &'static str,
    field: &str,
) -> Result<BTreeMap<String, bool>, CtapError> {
    match map.get(key) {
        None => Ok(BTreeMap::new()),
        Some(Value::Map(entries)) => entries
            .iter()
            .map(|(k, v)| match (k.as_text(), v.as_bool()) {
                (Some(k), Some(v)) => Ok((k.to_owned(), v)),
                _ => Err(malformed(what, format!("{field} is not a text→bool map"))),
            })
            .collect(),
        Some(_) => Err(malformed(what, format!("{field} is not a map"))),
    }
}

/// `"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"` for a 16-byte AAGUID.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
