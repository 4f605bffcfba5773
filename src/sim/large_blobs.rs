//! authenticatorLargeBlobs (0x0C, CTAP 2.1 §6.10) of the simulated key.
//!
//! The key stores one opaque serialized large-blob array (CBOR array ‖
//! LEFT(SHA-256(array), 16)); the client encodes and encrypts the entries. A
//! write comes in fragments of at most maxFragmentLength = maxMsgSize − 64
//! bytes, each authenticated with an lbw token when the key is protected, and
//! replaces the array only once the whole of it arrived with a good checksum.
//!
//! A child module of `authenticator` (declared there with `#[path]`) so it can
//! check tokens against the key's private state.

use super::*;

/// Request keys (§6.10.2).
mod key {
    pub const GET: u64 = 0x01;
    pub const SET: u64 = 0x02;
    pub const OFFSET: u64 = 0x03;
    pub const LENGTH: u64 = 0x04;
    pub const PIN_UV_AUTH_PARAM: u64 = 0x05;
    pub const PIN_UV_AUTH_PROTOCOL: u64 = 0x06;
}

/// Response key of a get: config (§6.10.2).
const CONFIG: u64 = 0x01;
/// Bytes of the truncated SHA-256 at the end of the serialized array.
const CHECK_LEN: usize = 16;

/// A write in progress (volatile: lost at power-off).
struct Write {
    expected_length: usize,
    buffer: Vec<u8>,
}

/// The stored serialized large-blob array (persistent) and a pending write.
pub(super) struct LargeBlobs {
    array: Vec<u8>,
    write: Option<Write>,
}

impl LargeBlobs {
    /// A factory-fresh key holds the empty array: 0x80 ‖ LEFT(SHA-256(0x80), 16) (§6.10.1).
    pub(super) fn new() -> Self {
        let empty = [0x80u8];
        let mut array = empty.to_vec();
        array.extend_from_slice(&Sha256::digest(empty)[..CHECK_LEN]);
        Self { array, write: None }
    }

    /// Power-off forgets an unfinished write; the stored array stays.
    pub(super) fn power_up(&mut self) {
        self.write = None;
    }

    /// The serialized array as stored (for tests and rigs).
    pub(super) fn serialized(&self) -> &[u8] {
        &self.array
    }
}

impl Authenticator {
    fn max_fragment_length(&self) -> usize {
        self.cfg.profile.max_msg_size.saturating_sub(64)
    }

    /// authenticatorLargeBlobs (§6.10.2): get or set, never both.
    pub(super) fn large_blobs(&mut self, p: &Value) -> R<Outcome> {
        let get = uint(p.get(key::GET))?;
        let set = bytes(p.get(key::SET))?;
        let offset = uint(p.get(key::OFFSET))?.ok_or(S::MISSING_PARAMETER)?;
        let length = uint(p.get(key::LENGTH))?;
        let param = bytes(p.get(key::PIN_UV_AUTH_PARAM))?;
        let protocol = p.get(key::PIN_UV_AUTH_PROTOCOL);
        match (get, set) {
            (Some(get), None) => {
                if length.is_some() || param.is_some() || protocol.is_some() {
                    return Err(S::INVALID_PARAMETER);
                }
                if get > self.max_fragment_length() as u64 {
                    return Err(S::INVALID_LENGTH);
                }
                let array = self.large_blobs.serialized();
                let start = usize::try_from(offset)
                    .ok()
                    .filter(|&o| o <= array.len())
                    .ok_or(S::INVALID_PARAMETER)?;
                let end = start.saturating_add(get as usize).min(array.len());
                ok(Value::map([(
                    Value::from(CONFIG),
                    Value::from(array[start..end].to_vec()),
                )]))
            }
            (None, Some(set)) => self.large_blobs_set(set, offset, length, param, protocol),
            _ => Err(S::INVALID_PARAMETER),
        }
    }

    fn large_blobs_set(
        &mut self,
        set: &[u8],
        offset: u64,
        length: Option<u64>,
        param: Option<&[u8]>,
        protocol: Option<&Value>,
    ) -> R<Outcome> {
        if set.len() > self.max_fragment_length() {
            return Err(S::INVALID_LENGTH);
        }
        let max = self
            .cfg
            .profile
            .max_serialized_large_blob_array
            .unwrap_or(0) as u64;
        // The first fragment announces the total length; later ones must not.
        let new_write = if offset == 0 {
            let length = length.ok_or(S::INVALID_PARAMETER)?;
            if length > max {
                return Err(S::LARGE_BLOB_STORAGE_FULL);
            }
            if length < (CHECK_LEN + 1) as u64 {
                return Err(S::INVALID_PARAMETER);
            }
            Some(length as usize)
        } else {
            if length.is_some() {
                return Err(S::INVALID_PARAMETER);
            }
            None
        };
        let expected_next = match (&new_write, &self.large_blobs.write) {
            (Some(_), _) => 0,
            (None, Some(w)) => w.buffer.len() as u64,
            (None, None) => return Err(S::INVALID_SEQ),
        };
        if offset != expected_next {
            return Err(S::INVALID_SEQ);
        }
        if self.pin.is_some() || self.always_uv {
            let param = param.ok_or(S::PUAT_REQUIRED)?;
            let protocol = self.protocol(protocol)?;
            // 32×0xff ‖ 0x0c 0x00 ‖ uint32LE(offset) ‖ SHA-256(set).
            let mut msg = vec![0xff; 32];
            msg.extend_from_slice(&[cmd::LARGE_BLOBS, 0x00]);
            msg.extend_from_slice(&(offset as u32).to_le_bytes());
            msg.extend_from_slice(&Sha256::digest(set));
            self.check_token(protocol, &msg, param, perm::LBW, None)?;
        }
        let expected_length = new_write
            .or_else(|| self.large_blobs.write.as_ref().map(|w| w.expected_length))
            .ok_or(S::INVALID_SEQ)?;
        if offset as usize + set.len() > expected_length {
            return Err(S::INVALID_PARAMETER);
        }
        let write = match new_write {
            Some(expected_length) => self.large_blobs.write.insert(Write {
                expected_length,
                buffer: Vec::with_capacity(expected_length),
            }),
            None => self.large_blobs.write.as_mut().ok_or(S::INVALID_SEQ)?,
        };
        write.buffer.extend_from_slice(set);
        if write.buffer.len() < write.expected_length {
            return ok_empty();
        }
        // Complete: keep it only with a good checksum (§6.10.2 INTEGRITY_FAILURE).
        let Some(done) = self.large_blobs.write.take() else {
            return Err(S::INVALID_SEQ);
        };
        let (data, check) = done.buffer.split_at(done.buffer.len() - CHECK_LEN);
        if Sha256::digest(data)[..CHECK_LEN] != *check {
            return Err(S::INTEGRITY_FAILURE);
        }
        if self.faults.flash_write_failure {
            return Err(S::OTHER);
        }
        self.large_blobs.array = done.buffer;
        ok_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_array_is_the_empty_cbor_array_and_its_checksum() {
        let lb = LargeBlobs::new();
        let a = lb.serialized();
        assert_eq!(a.len(), 17);
        assert_eq!(a[0], 0x80);
        assert_eq!(
            hex::encode(&a[1..]),
            hex::encode(&Sha256::digest([0x80u8])[..16])
        );
    }
}
