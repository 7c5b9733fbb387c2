//! Signed checkpoints in the C2SP `tlog-checkpoint` format, carried in a C2SP `signed-note`.
//!
//! ```text
//! warden/acme
//! 1042
//! 3Wq0…base64 root…=
//! time 2025-01-31T12:00:00Z
//!
//! — warden <base64(key id ‖ Ed25519 signature)>
//! ```
//!
//! Using the standard text form means existing transparency-log tooling (witnesses, note
//! verifiers) can read and cosign Warden's checkpoints, and a person can read them too.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The signer name on every Warden checkpoint signature line.
pub const KEY_NAME: &str = "warden";
/// Signature algorithm byte of the signed-note key hash for Ed25519.
const ALG_ED25519: u8 = 0x01;
const PRIVATE_KEY_PREFIX: &str = "warden-ed25519-private:";
const PUBLIC_KEY_PREFIX: &str = "warden-ed25519-public:";
/// U+2014 EM DASH and a space open every signature line of a signed note.
const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";

/// A signed statement that the tenant's log had `size` events with Merkle root `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Whole seconds: the note carries no finer time, so it is truncated when built.
    pub time: DateTime<Utc>,
}

impl Checkpoint {
    pub fn new(
        origin: impl Into<String>,
        size: u64,
        root: Hash,
        time: DateTime<Utc>,
    ) -> Checkpoint {
        Checkpoint {
            origin: origin.into(),
            size,
            root,
            time: time.trunc_subsecs(0),
        }
    }

    /// The log origin of a tenant's event log: `warden/<tenant>`.
    pub fn origin_for(tenant: &str) -> String {
        format!("warden/{tenant}")
    }

    /// The signed text: origin, size, root and the `time` extension line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            self.time
                .trunc_subsecs(0)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }

    /// Reads the checkpoint out of a note without checking any signature; for display, or
    /// when no public key is at hand. Use [`CheckpointVerifier::verify`] to trust it.
    pub fn parse_unverified(note: &str) -> Result<Checkpoint, CheckpointError> {
        let (body, _) = split_note(note)?;
        parse_body(body)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error(
        "checkpoint is not signed by this key (expected key {expected_key_name} with id {expected_key_id})"
    )]
    WrongKey {
        expected_key_name: String,
        expected_key_id: String,
    },
    #[error(
        "checkpoint signature does not verify: the note was altered or signed by another key with the same id"
    )]
    BadSignature,
    #[error("invalid key file: {0}")]
    KeyFile(String),
}

fn malformed(why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed(why.into())
}

/// Signs checkpoints with the log's Ed25519 key.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the seed, only which key this is.
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.verifier().key_id_hex())
            .finish()
    }
}

impl CheckpointSigner {
    /// A fresh key from the operating system's random source.
    ///
    /// # Panics
    /// If the operating system cannot provide randomness: no safe key can be made then.
    pub fn generate() -> CheckpointSigner {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system provides randomness");
        CheckpointSigner::from_seed(seed)
    }

    pub fn from_seed(seed: [u8; 32]) -> CheckpointSigner {
        CheckpointSigner {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier::from_key(self.key.verifying_key())
    }

    /// The complete signed note.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&key_id(&self.key.verifying_key()));
        blob.extend_from_slice(&signature.to_bytes());
        format!(
            "{body}\n{SIGNATURE_LINE_PREFIX}{KEY_NAME} {}\n",
            B64.encode(blob)
        )
    }

    /// `warden-ed25519-private:<base64 seed>`.
    pub fn to_key_file(&self) -> String {
        format!("{PRIVATE_KEY_PREFIX}{}\n", B64.encode(self.seed()))
    }

    pub fn from_key_file(text: &str) -> Result<CheckpointSigner, CheckpointError> {
        let seed = decode_key_file(text, PRIVATE_KEY_PREFIX)?;
        Ok(CheckpointSigner::from_seed(seed))
    }
}

/// Checks checkpoint notes against the log's public key.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckpointVerifier {
    key: VerifyingKey,
    id: [u8; 4],
}

impl fmt::Debug for CheckpointVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointVerifier")
            .field("key_id", &self.key_id_hex())
            .finish()
    }
}

impl CheckpointVerifier {
    fn from_key(key: VerifyingKey) -> CheckpointVerifier {
        CheckpointVerifier {
            id: key_id(&key),
            key,
        }
    }

    pub fn from_public_key_bytes(bytes: &[u8; 32]) -> Result<CheckpointVerifier, CheckpointError> {
        VerifyingKey::from_bytes(bytes)
            .map(CheckpointVerifier::from_key)
            .map_err(|_| CheckpointError::KeyFile("not a valid Ed25519 public key".into()))
    }

    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The 4-byte signed-note key id in hex, for people comparing keys.
    pub fn key_id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// The signed-note verifier key string (`<name>+<hex key id>+<base64(0x01 ‖ key)>`), the
    /// form other note tooling takes.
    pub fn note_verifier_key(&self) -> String {
        let mut blob = vec![ALG_ED25519];
        blob.extend_from_slice(&self.public_key_bytes());
        format!("{KEY_NAME}+{}+{}", self.key_id_hex(), B64.encode(blob))
    }

    /// Checks the note's signature by this key and returns the checkpoint it carries.
    /// Signatures by other keys (cosigners, witnesses) are allowed and ignored.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let (body, signatures) = split_note(note)?;
        let mut ours = None;
        for line in signatures {
            let (name, blob) = parse_signature_line(line)?;
            if name == KEY_NAME && blob[..4] == self.id {
                ours = Some(blob);
                break;
            }
        }
        let blob = ours.ok_or_else(|| CheckpointError::WrongKey {
            expected_key_name: KEY_NAME.into(),
            expected_key_id: self.key_id_hex(),
        })?;
        let signature =
            Signature::from_slice(&blob[4..]).map_err(|_| CheckpointError::BadSignature)?;
        self.key
            .verify_strict(body.as_bytes(), &signature)
            .map_err(|_| CheckpointError::BadSignature)?;
        parse_body(body)
    }

    /// `warden-ed25519-public:<base64 key>`.
    pub fn to_key_file(&self) -> String {
        format!(
            "{PUBLIC_KEY_PREFIX}{}\n",
            B64.encode(self.public_key_bytes())
        )
    }

    pub fn from_key_file(text: &str) -> Result<CheckpointVerifier, CheckpointError> {
        let bytes = decode_key_file(text, PUBLIC_KEY_PREFIX)?;
        CheckpointVerifier::from_public_key_bytes(&bytes)
    }
}

/// First four bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`, the signed-note key hash.
fn key_id(key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(KEY_NAME.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn decode_key_file(text: &str, prefix: &str) -> Result<[u8; 32], CheckpointError> {
    let bad = |why: &str| CheckpointError::KeyFile(why.to_owned());
    let encoded = text
        .trim()
        .strip_prefix(prefix)
        .ok_or_else(|| bad(&format!("expected a line starting with {prefix:?}")))?;
    let bytes = B64
        .decode(encoded.trim())
        .map_err(|_| bad("key is not valid base64"))?;
    bytes.try_into().map_err(|_| bad("key must be 32 bytes"))
}

/// Splits a note into its body (with its final newline) and its signature lines.
fn split_note(note: &str) -> Result<(&str, impl Iterator<Item = &str>), CheckpointError> {
    let split = note
        .find("\n\n")
        .ok_or_else(|| malformed("no blank line between text and signatures"))?;
    let (body, rest) = (&note[..=split], &note[split + 2..]);
    if rest.is_empty() {
        return Err(malformed("no signature lines"));
    }
    let signatures = rest
        .strip_suffix('\n')
        .ok_or_else(|| malformed("signature lines must end with a newline"))?;
    Ok((body, signatures.split('\n')))
}

fn parse_signature_line(line: &str) -> Result<(&str, Vec<u8>), CheckpointError> {
    let rest = line.strip_prefix(SIGNATURE_LINE_PREFIX).ok_or_else(|| {
        malformed(format!(
            "signature line does not start with an em dash: {line:?}"
        ))
    })?;
    let (name, encoded) = rest
        .split_once(' ')
        .ok_or_else(|| malformed("signature line has no signature"))?;
    if name.is_empty() || name.contains('+') {
        return Err(malformed(format!("invalid key name {name:?}")));
    }
    let blob = B64
        .decode(encoded)
        .map_err(|_| malformed("signature is not valid base64"))?;
    if blob.len() < 5 {
        return Err(malformed("signature too short"));
    }
    Ok((name, blob))
}

fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
    let mut lines = body
        .strip_suffix('\n')
        .ok_or_else(|| malformed("text must end with a newline"))?
        .split('\n');
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| malformed("missing origin line"))?;
    let size_text = lines
        .next()
        .ok_or_else(|| malformed("missing tree size line"))?;
    let canonical_decimal = !size_text.is_empty()
        && size_text.bytes().all(|b| b.is_ascii_digit())
        && (size_text == "0" || !size_text.starts_with('0'));
    let size: u64 = size_text
        .parse()
        .ok()
        .filter(|_| canonical_decimal)
        .ok_or_else(|| malformed(format!("tree size {size_text:?} is not a decimal number")))?;
    let root_text = lines
        .next()
        .ok_or_else(|| malformed("missing root hash line"))?;
    let root: Hash = B64
        .decode(root_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("root hash is not 32 bytes of base64"))?;
    let mut time = None;
    for line in lines {
        if line.is_empty() {
            return Err(malformed("empty line inside the text"));
        }
        if let Some(t) = line.strip_prefix("time ") {
            if time.is_some() {
                return Err(malformed("more than one time line"));
            }
            let parsed = DateTime::parse_from_rfc3339(t)
                .map_err(|e| malformed(format!("bad time {t:?}: {e}")))?;
            time = Some(parsed.with_timezone(&Utc));
        }
        // Other extension lines are signed but not ours to interpret.
    }
    let time = time.ok_or_else(|| malformed("missing time line"))?;
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
        time,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::merkle::leaf_hash;

    fn checkpoint() -> Checkpoint {
        let time = Utc.with_ymd_and_hms(2025, 1, 31, 12, 0, 0).unwrap();
        Checkpoint::new(
            Checkpoint::origin_for("acme"),
            1042,
            leaf_hash(b"root"),
            time,
        )
    }

    #[test]
    fn round_trip() {
        let signer = CheckpointSigner::from_seed([7; 32]);
        let cp = checkpoint();
        let note = signer.sign(&cp);
        assert!(note.starts_with("warden/acme\n1042\n"), "{note}");
        assert!(
            note.contains("\ntime 2025-01-31T12:00:00Z\n\n\u{2014} warden "),
            "{note}"
        );
        assert_eq!(signer.verifier().verify(&note).unwrap(), cp);
        assert_eq!(Checkpoint::parse_unverified(&note).unwrap(), cp);
    }

    #[test]
    fn subseconds_are_dropped_when_built() {
        let time = Utc.timestamp_micros(1_700_000_000_123_456).unwrap();
        let cp = Checkpoint::new("warden/acme", 1, [0; 32], time);
        let signer = CheckpointSigner::generate();
        assert_eq!(signer.verifier().verify(&signer.sign(&cp)).unwrap(), cp);
    }

    #[test]
    fn any_changed_byte_fails() {
        let signer = CheckpointSigner::from_seed([9; 32]);
        let verifier = signer.verifier();
        let note = signer.sign(&checkpoint());
        let bytes = note.as_bytes();
        // Signature checks are slow in unoptimised builds: take every line's first and last
        // byte and a stride through the rest, which still touches every field.
        let line_edges = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .flat_map(|(i, _)| [i.saturating_sub(1), i, i + 1]);
        let mut positions: Vec<usize> = (0..bytes.len()).step_by(5).chain(line_edges).collect();
        positions.retain(|&i| i < bytes.len());
        positions.sort_unstable();
        positions.dedup();
        for i in positions {
            let mut changed = bytes.to_vec();
            changed[i] ^= 0x01;
            let Ok(text) = String::from_utf8(changed) else {
                continue;
            };
            assert!(
                verifier.verify(&text).is_err(),
                "byte {i} changed and the note still verified"
            );
        }
        let extended = note.replacen("\n\n", "\nextra line\n\n", 1);
        assert_eq!(
            verifier.verify(&extended),
            Err(CheckpointError::BadSignature)
        );
        let mut sig_changed = note.clone().into_bytes();
        let pos = note.len() - 10;
        sig_changed[pos] = if sig_changed[pos] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verifier.verify(std::str::from_utf8(&sig_changed).unwrap()),
            Err(CheckpointError::BadSignature)
        );
    }

    #[test]
    fn wrong_key_fails() {
        let note = CheckpointSigner::from_seed([1; 32]).sign(&checkpoint());
        let other = CheckpointSigner::from_seed([2; 32]).verifier();
        assert!(matches!(
            other.verify(&note),
            Err(CheckpointError::WrongKey { .. })
        ));
    }

    #[test]
    fn cosignatures_are_ignored() {
        let signer = CheckpointSigner::from_seed([3; 32]);
        let note = signer.sign(&checkpoint());
        let witness = format!("\u{2014} witness.example {}\n", B64.encode([5u8; 68]));
        let cosigned = note.replacen("\n\n", &format!("\n\n{witness}"), 1);
        assert_eq!(signer.verifier().verify(&cosigned).unwrap(), checkpoint());
    }

    #[test]
    fn malformed_notes_are_named_so() {
        let verifier = CheckpointSigner::from_seed([4; 32]).verifier();
        for bad in [
            "",
            "warden/acme\n1\n",
            "warden/acme\n1\nAAAA\n\n",
            "text\n\nnot a signature\n",
        ] {
            assert!(
                matches!(verifier.verify(bad), Err(CheckpointError::Malformed(_))),
                "{bad:?}"
            );
        }
        let signer = CheckpointSigner::from_seed([4; 32]);
        let body_without_time = "warden/acme\n01\nAAAA\n";
        assert!(matches!(
            parse_body(body_without_time),
            Err(CheckpointError::Malformed(_))
        ));
        let note = signer.sign(&checkpoint());
        assert!(matches!(
            verifier.verify(note.trim_end()),
            Err(CheckpointError::Malformed(_))
        ));
    }

    #[test]
    fn key_files_round_trip() {
        let signer = CheckpointSigner::generate();
        let text = signer.to_key_file();
        assert!(text.starts_with("warden-ed25519-private:"));
        let back = CheckpointSigner::from_key_file(&text).unwrap();
        assert_eq!(back.seed(), signer.seed());

        let public = signer.verifier().to_key_file();
        assert!(public.starts_with("warden-ed25519-public:"));
        let verifier = CheckpointVerifier::from_key_file(&public).unwrap();
        assert_eq!(verifier, signer.verifier());
        assert_eq!(
            verifier.public_key_bytes(),
            signer.verifier().public_key_bytes()
        );

        assert!(CheckpointVerifier::from_key_file(&text).is_err());
        assert!(CheckpointSigner::from_key_file(&public).is_err());
        assert!(CheckpointSigner::from_key_file("warden-ed25519-private:AAAA").is_err());
        assert!(!format!("{signer:?}").contains(&B64.encode(signer.seed())));
    }

    #[test]
    fn note_verifier_key_matches_the_key_id() {
        let verifier = CheckpointSigner::from_seed([6; 32]).verifier();
        let vkey = verifier.note_verifier_key();
        let parts: Vec<&str> = vkey.split('+').collect();
        assert_eq!(parts[0], KEY_NAME);
        assert_eq!(parts[1], verifier.key_id_hex());
        assert_eq!(B64.decode(parts[2]).unwrap()[0], ALG_ED25519);
    }
}
