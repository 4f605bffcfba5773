//! Station key custody (SPEC §2): P-384 transport keys (`use: enc`) and
//! signing keys (`use: sig`, ES384), several of each, selected by `kid`.
//!
//! On disk, a keys directory holds one private JWK per file (`<kid>.jwk`,
//! mode 0600, created with that mode so it is never readable by others, not
//! even between create and chmod) and `manifest.json` naming the active
//! signing key. The same layout works as systemd's `$CREDENTIALS_DIRECTORY`
//! (`LoadCredential=<kid>.jwk:…`). Loading refuses any key file that group or
//! others may read or write. Private keys live only in `p384::SecretKey`
//! (zeroized on drop) and zeroizing buffers.

use super::b64;
use super::jwe::{ecdh_z_in_memory, EcdhSecret, KeyResolver};
use super::jwk::{point_from_coords, EcJwk, Jwks, KeyUse};
use super::jws::{sign_es384_in_memory, Es384Signer};
use super::pkcs11::{HsmConfig, HsmError, Token, TokenKeys};
use p384::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Name of the manifest in a keys directory.
pub const MANIFEST: &str = "manifest.json";
/// Public JWKS file names written by `keys export-jwks` (SPEC §2).
pub const TRANSPORT_JWKS: &str = "transport-keys.jwks";
pub const SIGN_JWKS: &str = "sign.jwks";

/// Why keys could not be generated, loaded or exported. Paths are ours, not
/// secret; no variant carries key material.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is readable or writable by group/others (mode {mode:o}); chmod 600 it")]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a P-384 private JWK of this station ({reason})")]
    BadKeyFile { path: PathBuf, reason: &'static str },
    #[error("{path}: manifest is not valid JSON of the expected shape")]
    BadManifest { path: PathBuf },
    #[error("two key files carry kid {kid}")]
    DuplicateKid { kid: String },
    #[error("no transport (use enc) key in {dir}; run `prereg-station keys generate --dir {dir}`")]
    NoTransportKey { dir: PathBuf },
    #[error("no signing (use sig) key in {dir}; run `prereg-station keys generate --dir {dir}`")]
    NoSigningKey { dir: PathBuf },
    #[error("several signing keys in {dir} and no active one in {MANIFEST}")]
    NoActiveSigningKey { dir: PathBuf },
    #[error("{MANIFEST} names active signing kid {kid}, which is not a signing key here")]
    ActiveKidUnknown { kid: String },
    #[error("no keys directory: set station.keys_dir or run under systemd with LoadCredential= ($CREDENTIALS_DIRECTORY)")]
    NoKeysDir,
    #[error("certificate chain refused: {reason}")]
    BadChain { reason: String },
    /// The PKCS#11 token could not be used (SPEC §14): one line, no PIN.
    #[error("{0}")]
    Hsm(HsmError),
}

impl KeyError {
    /// Stable short code.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Io { .. } => "keys.io",
            KeyError::LoosePermissions { .. } => "keys.loose_permissions",
            KeyError::BadKeyFile { .. } => "keys.bad_key_file",
            KeyError::BadManifest { .. } => "keys.bad_manifest",
            KeyError::DuplicateKid { .. } => "keys.duplicate_kid",
            KeyError::NoTransportKey { .. } => "keys.no_transport_key",
            KeyError::NoSigningKey { .. } => "keys.no_signing_key",
            KeyError::NoActiveSigningKey { .. } => "keys.no_active_signing_key",
            KeyError::ActiveKidUnknown { .. } => "keys.active_kid_unknown",
            KeyError::NoKeysDir => "keys.no_keys_dir",
            KeyError::Hsm(_) => "keys.hsm",
            KeyError::BadChain { .. } => "keys.bad_chain",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One private key and its `kid`. `Debug` shows the kid only. The scalar sits
/// in its own locked heap allocation (`SecretKey` zeroizes itself on drop).
pub struct NamedKey {
    pub kid: String,
    // Field order is drop order: zeroize and free the key, then unlock its page.
    key: Box<SecretKey>,
    _locked: crate::memlock::Locked,
}

impl fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamedKey({}, <private>)", self.kid)
    }
}

impl NamedKey {
    /// A fresh key with a thumbprint-derived kid `<prefix>-<RFC 7638 thumbprint>`.
    pub fn generate(prefix: &str) -> Self {
        let key = SecretKey::random(&mut rand_core::OsRng);
        let jwk = EcJwk::from_public(&key.public_key(), "", KeyUse::Enc);
        let kid = format!("{prefix}-{}", &jwk.thumbprint()[..22]);
        NamedKey::new(kid, key)
    }

    pub fn new(kid: impl Into<String>, key: SecretKey) -> Self {
        let key = Box::new(key);
        let _locked = crate::memlock::Locked::value::<SecretKey>(&key);
        NamedKey {
            kid: kid.into(),
            key,
            _locked,
        }
    }

    pub fn secret(&self) -> &SecretKey {
        &self.key
    }

    pub fn public_jwk(&self, key_use: KeyUse) -> EcJwk {
        EcJwk::from_public(&self.key.public_key(), &self.kid, key_use)
    }

    /// The private JWK text (RFC 7518 §6.2.2), in a zeroizing buffer.
    pub fn private_jwk_json(&self, key_use: KeyUse) -> Zeroizing<Vec<u8>> {
        let public = self.public_jwk(key_use);
        let d = Zeroizing::new(b64::encode(self.key.to_bytes()));
        let file = PrivateJwk {
            kty: public.kty,
            crv: public.crv,
            kid: public.kid,
            key_use: match key_use {
                KeyUse::Enc => "enc".into(),
                KeyUse::Sig => "sig".into(),
            },
            x: public.x,
            y: public.y,
            d: d.to_string(),
        };
        // Reserved up front so the serializer never reallocates (no stray copies).
        let mut out = Zeroizing::new(Vec::with_capacity(1024));
        // Writing strings into a Vec cannot fail.
        let _ = serde_json::to_writer_pretty(&mut *out, &file);
        out
    }

    /// Parses a private JWK, checking that `d` matches `x`/`y`.
    pub fn from_private_jwk(text: &[u8]) -> Result<(Self, KeyUse), &'static str> {
        let file: PrivateJwk = serde_json::from_slice(text).map_err(|_| "not a JWK")?;
        if file.kty != "EC" || file.crv != "P-384" {
            return Err("not an EC P-384 key");
        }
        let key_use = match file.key_use.as_str() {
            "enc" => KeyUse::Enc,
            "sig" => KeyUse::Sig,
            _ => return Err("use is neither enc nor sig"),
        };
        if file.kid.is_empty() {
            return Err("no kid");
        }
        let d = Zeroizing::new(b64::decode(&file.d).map_err(|_| "d is not base64url")?);
        if d.len() != 48 {
            return Err("d is not 48 bytes");
        }
        let key = SecretKey::from_slice(&d).map_err(|_| "d is not a P-384 scalar")?;
        let public = point_from_coords(&file.x, &file.y).ok_or("x/y is not a P-384 point")?;
        if public != key.public_key() {
            return Err("x/y does not belong to d");
        }
        Ok((NamedKey::new(file.kid.clone(), key), key_use))
    }
}

/// A private JWK as stored: every member zeroized on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct PrivateJwk {
    kty: String,
    crv: String,
    kid: String,
    #[serde(rename = "use")]
    key_use: String,
    x: String,
    y: String,
    d: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    v: u32,
    active_signing_kid: String,
}

/// The station's private keys, loaded once, in one of two custodies (SPEC §2,
/// §14). The JOSE code reaches them only through [`KeyResolver`] (ECDH `Z`
/// for a kid) and [`Es384Signer`] (the active signing key).
#[derive(Debug)]
pub struct StationKeys {
    custody: Custody,
    active_signing: usize,
    /// `x5c` by signing kid, from `<kid>.chain.pem` in the keys directory.
    chains: Vec<(String, Vec<String>)>,
}

#[derive(Debug)]
enum Custody {
    /// Private JWK files, loaded into locked zeroizing memory (the default).
    Files {
        transport: Vec<NamedKey>,
        signing: Vec<NamedKey>,
    },
    /// A PKCS#11 token; only handles and public keys are held here.
    Pkcs11(Box<TokenKeys>),
}

impl StationKeys {
    /// One fresh transport and signing key, in memory only (tests, demo).
    pub fn generate_ephemeral() -> Self {
        StationKeys {
            custody: Custody::Files {
                transport: vec![NamedKey::generate("prereg-trans")],
                signing: vec![NamedKey::generate("prereg-sign")],
            },
            active_signing: 0,
            chains: Vec::new(),
        }
    }

    /// From explicit keys; `active_signing_kid` must name one of `signing`.
    pub fn from_keys(
        transport: Vec<NamedKey>,
        signing: Vec<NamedKey>,
        active_signing_kid: &str,
    ) -> Result<Self, KeyError> {
        let active_signing = signing
            .iter()
            .position(|k| k.kid == active_signing_kid)
            .ok_or_else(|| KeyError::ActiveKidUnknown {
                kid: active_signing_kid.to_string(),
            })?;
        if transport.is_empty() {
            return Err(KeyError::NoTransportKey {
                dir: PathBuf::new(),
            });
        }
        Ok(StationKeys {
            custody: Custody::Files { transport, signing },
            active_signing,
            chains: Vec::new(),
        })
    }

    /// `keys generate --dir D`: adds a new transport and a new signing key to
    /// `dir` (created 0700 if missing), makes the new signing key active, and
    /// returns everything now in the directory.
    pub fn generate(dir: &Path) -> Result<Self, KeyError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let transport = NamedKey::generate("prereg-trans");
        let signing = NamedKey::generate("prereg-sign");
        write_private(dir, &transport, KeyUse::Enc)?;
        write_private(dir, &signing, KeyUse::Sig)?;
        let manifest = Manifest {
            v: 1,
            active_signing_kid: signing.kid.clone(),
        };
        let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        write_atomic(dir, MANIFEST, &text, 0o600)?;
        Self::load_dir(dir)
    }

    /// Loads from `keys_dir`, or from `$CREDENTIALS_DIRECTORY` when `None`.
    pub fn load(keys_dir: Option<&Path>) -> Result<Self, KeyError> {
        match keys_dir {
            Some(d) => Self::load_dir(d),
            None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(d) => Self::load_dir(Path::new(&d)),
                None => Err(KeyError::NoKeysDir),
            },
        }
    }

    /// Loads every `*.jwk` in `dir`, refusing loose permissions.
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jwk"))
            .collect();
        names.sort();
        let mut transport = Vec::new();
        let mut signing: Vec<NamedKey> = Vec::new();
        for path in names {
            let text = read_private(&path)?;
            let (key, key_use) =
                NamedKey::from_private_jwk(&text).map_err(|reason| KeyError::BadKeyFile {
                    path: path.clone(),
                    reason,
                })?;
            if transport
                .iter()
                .chain(signing.iter())
                .any(|k: &NamedKey| k.kid == key.kid)
            {
                return Err(KeyError::DuplicateKid { kid: key.kid });
            }
            match key_use {
                KeyUse::Enc => transport.push(key),
                KeyUse::Sig => signing.push(key),
            }
        }
        if transport.is_empty() {
            return Err(KeyError::NoTransportKey {
                dir: dir.to_path_buf(),
            });
        }
        if signing.is_empty() {
            return Err(KeyError::NoSigningKey {
                dir: dir.to_path_buf(),
            });
        }
        let kids: Vec<&str> = signing.iter().map(|k| k.kid.as_str()).collect();
        let active_signing = active_index(dir, &kids)?;
        let chains = load_chains(dir, &kids);
        Ok(StationKeys {
            custody: Custody::Files { transport, signing },
            active_signing,
            chains,
        })
    }

    /// Public transport keys (`transport-keys.jwks`).
    pub fn transport_jwks(&self) -> Jwks {
        let keys = match &self.custody {
            Custody::Files { transport, .. } => transport
                .iter()
                .map(|k| k.public_jwk(KeyUse::Enc))
                .collect(),
            Custody::Pkcs11(t) => t
                .transport
                .iter()
                .map(|k| EcJwk::from_public(&k.public, &k.kid, KeyUse::Enc))
                .collect(),
        };
        Jwks { keys }
    }

    /// Public signing keys (`sign.jwks`), all of them so older responses still verify.
    pub fn signing_jwks(&self) -> Jwks {
        let keys: Vec<EcJwk> = match &self.custody {
            Custody::Files { signing, .. } => {
                signing.iter().map(|k| k.public_jwk(KeyUse::Sig)).collect()
            }
            Custody::Pkcs11(t) => t
                .signing
                .iter()
                .map(|k| EcJwk::from_public(&k.public, &k.kid, KeyUse::Sig))
                .collect(),
        };
        let keys = keys
            .into_iter()
            .map(|mut k: EcJwk| {
                k.x5c = self
                    .chains
                    .iter()
                    .find(|(kid, _)| *kid == k.kid)
                    .map(|(_, c)| c.clone());
                k
            })
            .collect();
        Jwks { keys }
    }

    /// `keys import-cert --chain F`: checks that the chain's leaf certifies
    /// the active signing key and stores it as `<kid>.chain.pem` in the keys
    /// directory; `sign.jwks` then carries it as `x5c` (SPEC §14).
    pub fn import_chain(
        &mut self,
        keys_dir: Option<&Path>,
        pem: &[u8],
    ) -> Result<PathBuf, KeyError> {
        let dir = custody_dir(keys_dir)?;
        let x5c = super::x5c::chain_for_active_key(self, pem)
            .map_err(|reason| KeyError::BadChain { reason })?;
        let kid = self.active_signing_kid().to_string();
        let path = write_atomic(&dir, &format!("{kid}.chain.pem"), pem, 0o644)?;
        self.chains.retain(|(k, _)| *k != kid);
        self.chains.push((kid, x5c));
        Ok(path)
    }

    /// Where the private keys are: `files` or `pkcs11 token "LABEL"`.
    pub fn custody_name(&self) -> String {
        match &self.custody {
            Custody::Files { .. } => "files".into(),
            Custody::Pkcs11(t) => format!("pkcs11 token {:?}", t.token.label()),
        }
    }

    /// Whether the custody can do what the station needs: always for files;
    /// for a token, the one line naming what its module does not offer
    /// ([`super::pkcs11::Token::missing_mechanisms`]).
    pub fn check_mechanisms(&self) -> Result<(), String> {
        let Custody::Pkcs11(t) = &self.custody else {
            return Ok(());
        };
        let missing = t.token.missing_mechanisms();
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "token {:?}: the module does not offer {}; the station needs CKM_ECDH1_DERIVE to \
             decrypt requests and CKM_ECDSA to sign responses (a PKCS#11 proxy such as p11-kit \
             before 0.25 does not forward ECDH; `pkcs11-tool --module MODULE -M` lists what it offers)",
            t.token.label(),
            missing.join(", ")
        ))
    }

    /// The token's session-pool statistics (wait and hold per call);
    /// `None` for file custody, which has no token and no pool.
    pub fn token_stats(&self) -> Option<super::pkcs11::PoolSnapshot> {
        match &self.custody {
            Custody::Files { .. } => None,
            Custody::Pkcs11(t) => Some(t.token.stats()),
        }
    }

    /// Opens the custody the configuration names: the PKCS#11 token of
    /// `hsm` when set (its PIN file in the keys directory), else key files.
    pub fn open(keys_dir: Option<&Path>, hsm: Option<&HsmConfig>) -> Result<Self, KeyError> {
        let Some(hsm) = hsm else {
            return Self::load(keys_dir);
        };
        let dir = custody_dir(keys_dir)?;
        let keys = TokenKeys::load(open_token(&dir, hsm)?).map_err(KeyError::Hsm)?;
        Self::from_token(&dir, keys)
    }

    fn from_token(dir: &Path, keys: TokenKeys) -> Result<Self, KeyError> {
        if keys.transport.is_empty() {
            return Err(KeyError::NoTransportKey {
                dir: dir.to_path_buf(),
            });
        }
        if keys.signing.is_empty() {
            return Err(KeyError::NoSigningKey {
                dir: dir.to_path_buf(),
            });
        }
        let kids: Vec<&str> = keys.signing.iter().map(|k| k.kid.as_str()).collect();
        let active_signing = active_index(dir, &kids)?;
        let chains = load_chains(dir, &kids);
        Ok(StationKeys {
            custody: Custody::Pkcs11(Box::new(keys)),
            active_signing,
            chains,
        })
    }

    /// `keys generate` with `[keys]` configured: a new transport and signing
    /// pair made inside the token; the new signing key becomes active (the
    /// manifest in `keys_dir` names it); older keys stay and keep decrypting.
    pub fn generate_in_token(keys_dir: Option<&Path>, hsm: &HsmConfig) -> Result<Self, KeyError> {
        let dir = custody_dir(keys_dir)?;
        let keys = TokenKeys::load(open_token(&dir, hsm)?).map_err(KeyError::Hsm)?;
        let transport = keys
            .generate("prereg-trans", KeyUse::Enc)
            .map_err(KeyError::Hsm)?;
        // Both pairs or neither: a transport key without its rotation's
        // signing key would be published by the next export-jwks.
        let signing = match keys.generate("prereg-sign", KeyUse::Sig) {
            Ok(kid) => kid,
            Err(e) => {
                if let Err(undo) = keys.destroy_pair(&transport) {
                    tracing::warn!("the new transport key {transport} stays in the token: {undo}");
                }
                return Err(KeyError::Hsm(e));
            }
        };
        let manifest = Manifest {
            v: 1,
            active_signing_kid: signing,
        };
        let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        write_atomic(&dir, MANIFEST, &text, 0o600)?;
        let keys = TokenKeys::load(keys.token).map_err(KeyError::Hsm)?;
        Self::from_token(&dir, keys)
    }

    /// `keys export-jwks`: writes both public JWKS files into `out_dir`.
    pub fn export_jwks(&self, out_dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
        fs::create_dir_all(out_dir).map_err(io(out_dir))?;
        let t = write_atomic(
            out_dir,
            TRANSPORT_JWKS,
            self.transport_jwks().to_json_pretty().as_bytes(),
            0o644,
        )?;
        let s = write_atomic(
            out_dir,
            SIGN_JWKS,
            self.signing_jwks().to_json_pretty().as_bytes(),
            0o644,
        )?;
        Ok((t, s))
    }

    /// Before a key is touched (recipe step 4, SPEC §14): a token custody
    /// proves it can still sign, so a token lost between decryption and the
    /// responses (step 11) is found while the key is still blank. File
    /// custody cannot fail to sign and skips the probe.
    pub fn check_signing(&self) -> Result<(), super::JoseError> {
        match &self.custody {
            Custody::Files { .. } => Ok(()),
            Custody::Pkcs11(_) => self.sign_es384(b"prereg-station custody probe").map(drop),
        }
    }

    /// The kid responses are signed with.
    pub fn active_signing_kid(&self) -> &str {
        match &self.custody {
            Custody::Files { signing, .. } => &signing[self.active_signing].kid,
            Custody::Pkcs11(t) => &t.signing[self.active_signing].kid,
        }
    }

    pub fn transport_kids(&self) -> Vec<&str> {
        match &self.custody {
            Custody::Files { transport, .. } => transport.iter().map(|k| k.kid.as_str()).collect(),
            Custody::Pkcs11(t) => t.transport.iter().map(|k| k.kid.as_str()).collect(),
        }
    }
}

impl KeyResolver for StationKeys {
    fn has_decryption_key(&self, kid: &str) -> bool {
        self.transport_kids().contains(&kid)
    }

    fn ecdh_z(&self, kid: &str, epk: &PublicKey) -> Result<EcdhSecret, super::JoseError> {
        match &self.custody {
            Custody::Files { transport, .. } => transport
                .iter()
                .find(|k| k.kid == kid)
                .map(|k| ecdh_z_in_memory(k.secret(), epk))
                .ok_or(super::JoseError::KidUnknown),
            Custody::Pkcs11(t) => t.ecdh_z(kid, epk),
        }
    }
}

impl Es384Signer for NamedKey {
    fn signing_kid(&self) -> &str {
        &self.kid
    }

    fn sign_es384(&self, signing_input: &[u8]) -> Result<[u8; 96], super::JoseError> {
        Ok(sign_es384_in_memory(self.secret(), signing_input))
    }
}

/// The station signs with its active signing key, wherever it is held.
impl Es384Signer for StationKeys {
    fn signing_kid(&self) -> &str {
        self.active_signing_kid()
    }

    fn sign_es384(&self, signing_input: &[u8]) -> Result<[u8; 96], super::JoseError> {
        match &self.custody {
            Custody::Files { signing, .. } => {
                signing[self.active_signing].sign_es384(signing_input)
            }
            Custody::Pkcs11(t) => t.sign_es384(self.active_signing_kid(), signing_input),
        }
    }
}

/// The key custody directory: `keys_dir` or `$CREDENTIALS_DIRECTORY`.
fn custody_dir(keys_dir: Option<&Path>) -> Result<PathBuf, KeyError> {
    match keys_dir {
        Some(d) => Ok(d.to_path_buf()),
        None => std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(PathBuf::from)
            .ok_or(KeyError::NoKeysDir),
    }
}

/// Reads the PIN file (mode-checked like a key file) and opens the token.
fn open_token(dir: &Path, hsm: &HsmConfig) -> Result<Token, KeyError> {
    let path = dir.join(&hsm.pin_file);
    let bytes = read_private(&path)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::BadKeyFile {
        path: path.clone(),
        reason: "PIN file is not UTF-8",
    })?;
    let pin = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
    if pin.is_empty() {
        return Err(KeyError::BadKeyFile {
            path,
            reason: "PIN file is empty",
        });
    }
    Token::open(hsm, pin).map_err(KeyError::Hsm)
}

/// The stored certificate chains of `kids` (`<kid>.chain.pem`); a chain
/// that does not parse is left out of `sign.jwks` (and said so in the log).
fn load_chains(dir: &Path, kids: &[&str]) -> Vec<(String, Vec<String>)> {
    use base64::Engine;
    use x509_cert::der::Encode;
    let mut out = Vec::new();
    for kid in kids {
        let path = dir.join(format!("{kid}.chain.pem"));
        let Ok(pem) = fs::read(&path) else { continue };
        let parsed = x509_cert::Certificate::load_pem_chain(&pem)
            .ok()
            .and_then(|c| {
                c.iter()
                    .map(|c| {
                        c.to_der()
                            .ok()
                            .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
                    })
                    .collect::<Option<Vec<_>>>()
            });
        match parsed {
            Some(x5c) if !x5c.is_empty() => out.push((kid.to_string(), x5c)),
            _ => tracing::warn!(
                "{}: not a PEM certificate chain; sign.jwks carries no x5c for {kid}",
                path.display()
            ),
        }
    }
    out
}

/// Index of the active signing key among `kids`: the manifest's choice, or
/// the only key when there is one and no manifest.
fn active_index(dir: &Path, kids: &[&str]) -> Result<usize, KeyError> {
    // systemd's `LoadCredential=keys:/etc/prereg-station/keys` hands a
    // directory over as `keys_<file>`: accept the manifest under that name too.
    let manifest_path = [dir.join(MANIFEST), dir.join(format!("keys_{MANIFEST}"))]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join(MANIFEST));
    match fs::read(&manifest_path) {
        Ok(bytes) => {
            let m: Manifest =
                serde_json::from_slice(&bytes).map_err(|_| KeyError::BadManifest {
                    path: manifest_path.clone(),
                })?;
            kids.iter()
                .position(|k| *k == m.active_signing_kid)
                .ok_or(KeyError::ActiveKidUnknown {
                    kid: m.active_signing_kid,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && kids.len() == 1 => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(KeyError::NoActiveSigningKey {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(io(&manifest_path)(e)),
    }
}

/// Reads a private key file after checking its mode. The check is on the
/// open file descriptor, so a swap between check and read cannot slip past.
pub(crate) fn read_private(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use std::io::Read;
    let mut file = fs::File::open(path).map_err(io(path))?;
    let mode = file.metadata().map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::LoosePermissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    Read::by_ref(&mut file)
        .take(64 * 1024)
        .read_to_end(&mut buf)
        .map_err(io(path))?;
    Ok(buf)
}

pub(crate) fn write_private(
    dir: &Path,
    key: &NamedKey,
    key_use: KeyUse,
) -> Result<PathBuf, KeyError> {
    let path = dir.join(format!("{}.jwk", key.kid));
    // create_new + mode 0600 at open(2): the file never exists with wider bits.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    file.write_all(&key.private_jwk_json(key_use))
        .map_err(io(&path))?;
    file.sync_all().map_err(io(&path))?;
    Ok(path)
}

/// Temp file (with `mode` from creation), fsync, rename.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<PathBuf, KeyError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    // A stale temp file (or a planted symlink) is removed, then the temp file
    // is created exclusively with its final mode.
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_directory_handed_over_by_systemd_load_credential() {
        // LoadCredential=keys:DIR names each file keys_<file> in $CREDENTIALS_DIRECTORY.
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("keys");
        let made = StationKeys::generate(&src).unwrap();
        // A second signing key makes the manifest necessary.
        let extra = NamedKey::generate("sign");
        fs::write(
            src.join(format!("{}.jwk", extra.kid)),
            &*extra.private_jwk_json(KeyUse::Sig),
        )
        .unwrap();
        fs::set_permissions(
            src.join(format!("{}.jwk", extra.kid)),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let creds = dir.path().join("creds");
        fs::create_dir(&creds).unwrap();
        for e in fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            let to = creds.join(format!("keys_{}", p.file_name().unwrap().to_str().unwrap()));
            fs::copy(&p, &to).unwrap();
            fs::set_permissions(&to, fs::Permissions::from_mode(0o400)).unwrap();
        }
        let loaded = StationKeys::load_dir(&creds).unwrap();
        assert_eq!(loaded.active_signing_kid(), made.active_signing_kid());
    }

    #[test]
    fn generate_load_rotate_and_refuse_loose_modes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("keys");
        let first = StationKeys::generate(&d).unwrap();
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let second = StationKeys::generate(&d).unwrap();
        assert_eq!(second.transport_jwks().keys.len(), 2);
        assert_eq!(second.signing_jwks().keys.len(), 2);
        assert_ne!(second.active_signing_kid(), first.active_signing_kid());
        let loaded = StationKeys::load_dir(&d).unwrap();
        assert_eq!(loaded.active_signing_kid(), second.active_signing_kid());
        for k in first.transport_kids() {
            assert!(loaded.has_decryption_key(k));
        }
        let victim = d.join(format!("{}.jwk", first.active_signing_kid()));
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
        let err = StationKeys::load_dir(&d).unwrap_err();
        assert_eq!(err.code(), "keys.loose_permissions");
        let out = dir.path().join("pub");
        let (t, s) = second.export_jwks(&out).unwrap();
        let tj = fs::read_to_string(t).unwrap();
        let sj = fs::read_to_string(s).unwrap();
        assert!(!tj.contains("\"d\"") && !sj.contains("\"d\""));
        assert_eq!(Jwks::from_json(&sj).unwrap().keys.len(), 2);
    }

    #[test]
    fn debug_never_shows_private_keys() {
        let keys = StationKeys::generate_ephemeral();
        let Custody::Files { signing, .. } = &keys.custody else {
            unreachable!("ephemeral keys are file custody")
        };
        let d = b64::encode(signing[0].secret().to_bytes());
        assert!(!format!("{keys:?}").contains(&d));
    }

    #[test]
    fn private_keys_sit_in_locked_memory() {
        let before = crate::memlock::stats().failures;
        let key = NamedKey::generate("t");
        if crate::memlock::stats().failures == before {
            let addr = &*key.key as *const SecretKey as usize;
            assert_eq!(crate::memlock::is_locked(addr), Some(true));
        }
    }
}
