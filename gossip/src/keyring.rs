//! Datagram encryption under a rotating keyring (the memberlist scheme).
//!
//! ```text
//! datagram = [format 0x01][nonce: 12 random bytes][ChaCha20-Poly1305(plaintext) + 16-byte tag]
//!             '-- also the AEAD's associated data
//! ```
//! Senders always use the primary key; receivers try the primary, then every other
//! key, so a rotation is: add the new key to `others` everywhere, make it primary
//! everywhere, then drop the old key.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::Rng;

use crate::GossipError;

/// Format byte at the start of every datagram; lets a future format coexist.
pub const FORMAT_V1: u8 = 1;
/// Bytes the encryption adds to each foca payload: format byte, nonce, AEAD tag.
pub const OVERHEAD: usize = 1 + 12 + 16;

/// The shared secrets of a gossip cluster.
///
/// It exists so that only holders of a deployment key can join or even read
/// membership traffic, and so keys can rotate without a flag day.
#[derive(Clone)]
pub struct Keyring {
    /// Key used to encrypt every outgoing datagram (also tried first on receive).
    pub primary: [u8; 32],
    /// Older or newer keys still accepted on receive during a rotation.
    pub others: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "Keyring({} keys)", 1 + self.others.len())
    }
}

impl Keyring {
    /// A keyring from raw keys; the first is the primary.
    pub fn from_keys(keys: &[[u8; 32]]) -> Result<Self, GossipError> {
        let (primary, others) = keys.split_first().ok_or(GossipError::EmptyKeyring)?;
        Ok(Self {
            primary: *primary,
            others: others.to_vec(),
        })
    }

    /// A keyring from the deployment file's base64 strings; the first is the primary.
    pub fn from_base64(keys: &[String]) -> Result<Self, GossipError> {
        let mut raw = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|e| GossipError::InvalidKey {
                    index,
                    reason: format!("not base64 ({e})"),
                })?;
            let key: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| GossipError::InvalidKey {
                        index,
                        reason: format!("decodes to {} bytes, not 32", bytes.len()),
                    })?;
            raw.push(key);
        }
        Self::from_keys(&raw)
    }

    /// Number of keys accepted on receive.
    pub fn len(&self) -> usize {
        1 + self.others.len()
    }

    /// Always false: a keyring holds at least its primary key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The key at `index` (0 = primary, then `others` in order), if any.
    fn key(&self, index: usize) -> Option<&[u8; 32]> {
        if index == 0 {
            Some(&self.primary)
        } else {
            self.others.get(index - 1)
        }
    }

    /// Encrypts `plaintext` under the primary key with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], rng: &mut impl Rng) -> Vec<u8> {
        self.seal_with(0, plaintext, rng)
    }

    /// Encrypts under key `index` (falling back to the primary if out of range).
    ///
    /// The node answers a peer in the key that peer last spoke, so a node that
    /// still holds only the old key keeps working mid-rotation.
    pub fn seal_with(&self, index: usize, plaintext: &[u8], rng: &mut impl Rng) -> Vec<u8> {
        let key = self.key(index).unwrap_or(&self.primary);
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &[FORMAT_V1],
                },
            )
            .expect("ChaCha20-Poly1305 encryption only fails past 256 GiB");
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts a datagram, trying the primary then every other key; also returns
    /// the index of the key that worked.
    pub fn open(&self, datagram: &[u8]) -> Result<(Vec<u8>, usize), GossipError> {
        if datagram.len() < OVERHEAD {
            return Err(GossipError::Malformed {
                len: datagram.len(),
                reason: "shorter than format byte + nonce + tag",
            });
        }
        if datagram[0] != FORMAT_V1 {
            return Err(GossipError::Malformed {
                len: datagram.len(),
                reason: "unknown format byte (not a Meridian gossip datagram?)",
            });
        }
        let nonce = Nonce::from_slice(&datagram[1..13]);
        for (index, key) in std::iter::once(&self.primary)
            .chain(self.others.iter())
            .enumerate()
        {
            let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
            if let Ok(plain) = cipher.decrypt(
                nonce,
                Payload {
                    msg: &datagram[13..],
                    aad: &datagram[..1],
                },
            ) {
                return Ok((plain, index));
            }
        }
        Err(GossipError::Unauthenticated {
            len: datagram.len(),
            keys: self.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn sealed_datagram_opens_and_hides_plaintext() {
        let ring = Keyring::from_keys(&[[1; 32]]).unwrap();
        let msg = b"membership update: eu-1 alive";
        let d = ring.seal(msg, &mut rng());
        assert_eq!(d.len(), msg.len() + OVERHEAD);
        assert!(!d.windows(msg.len()).any(|w| w == msg));
        assert_eq!(ring.open(&d).unwrap(), (msg.to_vec(), 0));
    }

    #[test]
    fn two_seals_use_different_nonces() {
        let ring = Keyring::from_keys(&[[1; 32]]).unwrap();
        let mut r = rng();
        assert_ne!(ring.seal(b"x", &mut r), ring.seal(b"x", &mut r));
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let ring = Keyring::from_keys(&[[1; 32]]).unwrap();
        let d = ring.seal(b"hello gossip", &mut rng());
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            assert!(ring.open(&bad).is_err(), "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_key_is_rejected_as_unauthenticated() {
        let a = Keyring::from_keys(&[[1; 32]]).unwrap();
        let b = Keyring::from_keys(&[[2; 32]]).unwrap();
        let d = a.seal(b"hi", &mut rng());
        assert!(matches!(
            b.open(&d),
            Err(GossipError::Unauthenticated { keys: 1, .. })
        ));
    }

    #[test]
    fn rotation_reply_in_senders_key_reaches_old_key_node() {
        let old = [1; 32];
        let new = [2; 32];
        let rotated = Keyring::from_keys(&[new, old]).unwrap();
        let old_only = Keyring::from_keys(&[old]).unwrap();
        // a rotated node reads what an old-key node sends, and learns which key it was
        let (_, idx) = rotated.open(&old_only.seal(b"x", &mut rng())).unwrap();
        assert_eq!(idx, 1);
        // an old-key node cannot read the new primary...
        assert!(old_only.open(&rotated.seal(b"x", &mut rng())).is_err());
        // ...but can read a reply sealed in the key it spoke
        assert!(
            old_only
                .open(&rotated.seal_with(idx, b"x", &mut rng()))
                .is_ok()
        );
    }

    #[test]
    fn base64_keys_are_validated_with_position() {
        let good = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let ring = Keyring::from_base64(std::slice::from_ref(&good)).unwrap();
        assert_eq!(ring.primary, [9; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([9u8; 16]);
        let err = Keyring::from_base64(&[good, short]).unwrap_err();
        assert!(err.to_string().contains("#1") && err.to_string().contains("16 bytes"));
        assert!(matches!(
            Keyring::from_base64(&["%%%".into()]),
            Err(GossipError::InvalidKey { index: 0, .. })
        ));
        assert!(matches!(
            Keyring::from_base64(&[]),
            Err(GossipError::EmptyKeyring)
        ));
    }

    #[test]
    fn short_or_foreign_datagrams_are_malformed() {
        let ring = Keyring::from_keys(&[[1; 32]]).unwrap();
        assert!(matches!(
            ring.open(&[1, 2, 3]),
            Err(GossipError::Malformed { .. })
        ));
        assert!(matches!(
            ring.open(&[0u8; 64]),
            Err(GossipError::Malformed { .. })
        ));
    }
}
