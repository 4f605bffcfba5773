//! Resident (discoverable) credential storage of the simulated key, bounded by
//! the profile's capacity (CTAP 2.1 §6.1 step 16: a full store answers
//! KEY_STORE_FULL).

use crate::secret::Secret;

/// One discoverable credential. The private scalar stays in a [`Secret`].
pub struct StoredCredential {
    pub id: Vec<u8>,
    pub rp_id: String,
    pub rp_name: Option<String>,
    pub user_id: Vec<u8>,
    pub user_name: Option<String>,
    pub user_display_name: Option<String>,
    pub cred_protect: u8,
    pub hmac_secret: bool,
    /// credBlob stored at makeCredential (CTAP 2.1 §12.2); empty when none was sent.
    pub cred_blob: Vec<u8>,
    /// largeBlobKey made at makeCredential (CTAP 2.1 §12.3), 32 random bytes.
    pub(crate) large_blob_key: Option<Secret<[u8; 32]>>,
    /// Creation order, for "most recent first" (CTAP 2.1 §6.2.2 step 11).
    pub created: u64,
    pub(crate) private_key: Secret<[u8; 32]>,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("id", &hex::encode(&self.id))
            .field("rp_id", &self.rp_id)
            .field("user_id", &hex::encode(&self.user_id))
            .field("cred_protect", &self.cred_protect)
            .finish_non_exhaustive()
    }
}

/// What tests and rigs may read back about a stored credential (no key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialMeta {
    pub id: Vec<u8>,
    pub rp_id: String,
    pub user_id: Vec<u8>,
    pub user_name: Option<String>,
    pub user_display_name: Option<String>,
    pub cred_protect: u8,
}

/// Why a credential could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    Full,
}

/// The credential store.
#[derive(Debug)]
pub struct CredentialStore {
    capacity: usize,
    creds: Vec<StoredCredential>,
    counter: u64,
}

impl CredentialStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            creds: Vec::new(),
            counter: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn len(&self) -> usize {
        self.creds.len()
    }
    pub fn is_empty(&self) -> bool {
        self.creds.is_empty()
    }
    pub fn remaining(&self) -> usize {
        self.capacity.saturating_sub(self.creds.len())
    }

    /// Stores `cred`; one with the same (rp id, user id) is overwritten
    /// (CTAP 2.1 §6.1.2 step 16), which needs no free slot.
    pub fn insert(&mut self, mut cred: StoredCredential) -> Result<(), StoreError> {
        self.counter += 1;
        cred.created = self.counter;
        if let Some(slot) = self
            .creds
            .iter_mut()
            .find(|c| c.rp_id == cred.rp_id && c.user_id == cred.user_id)
        {
            *slot = cred;
            return Ok(());
        }
        if self.creds.len() >= self.capacity {
            return Err(StoreError::Full);
        }
        self.creds.push(cred);
        Ok(())
    }

    /// Whether storing a credential for (rp, user) would need a free slot that is not there.
    pub fn would_overflow(&self, rp_id: &str, user_id: &[u8]) -> bool {
        self.creds.len() >= self.capacity
            && !self
                .creds
                .iter()
                .any(|c| c.rp_id == rp_id && c.user_id == user_id)
    }

    pub fn find(&self, id: &[u8]) -> Option<&StoredCredential> {
        self.creds.iter().find(|c| c.id == id)
    }
    pub fn find_mut(&mut self, id: &[u8]) -> Option<&mut StoredCredential> {
        self.creds.iter_mut().find(|c| c.id == id)
    }

    /// Credentials of `rp_id`, most recent first.
    pub fn for_rp(&self, rp_id: &str) -> Vec<&StoredCredential> {
        let mut v: Vec<_> = self.creds.iter().filter(|c| c.rp_id == rp_id).collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.created));
        v
    }

    /// Distinct RP ids, in first-stored order.
    pub fn rp_ids(&self) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for c in &self.creds {
            if !out.iter().any(|(id, _)| *id == c.rp_id) {
                out.push((c.rp_id.clone(), c.rp_name.clone()));
            }
        }
        out
    }

    pub fn delete(&mut self, id: &[u8]) -> bool {
        let before = self.creds.len();
        self.creds.retain(|c| c.id != id);
        before != self.creds.len()
    }

    pub fn clear(&mut self) {
        self.creds.clear();
    }

    pub fn metadata(&self) -> Vec<CredentialMeta> {
        self.creds
            .iter()
            .map(|c| CredentialMeta {
                id: c.id.clone(),
                rp_id: c.rp_id.clone(),
                user_id: c.user_id.clone(),
                user_name: c.user_name.clone(),
                user_display_name: c.user_display_name.clone(),
                cred_protect: c.cred_protect,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(rp: &str, user: u8) -> StoredCredential {
        StoredCredential {
            id: vec![user; 4],
            rp_id: rp.into(),
            rp_name: None,
            user_id: vec![user],
            user_name: None,
            user_display_name: None,
            cred_protect: 1,
            hmac_secret: false,
            cred_blob: Vec::new(),
            large_blob_key: None,
            created: 0,
            private_key: Secret::new([1; 32]),
        }
    }

    #[test]
    fn capacity_and_overwrite() {
        let mut s = CredentialStore::new(2);
        s.insert(cred("a", 1)).unwrap();
        s.insert(cred("a", 2)).unwrap();
        assert!(s.would_overflow("b", &[3]));
        assert_eq!(s.insert(cred("b", 3)), Err(StoreError::Full));
        assert!(!s.would_overflow("a", &[1]));
        s.insert(cred("a", 1)).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.for_rp("a")[0].user_id, [1]);
        assert!(s.delete(&[2; 4]));
        assert_eq!(s.remaining(), 1);
    }
}
