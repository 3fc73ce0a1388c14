//! Recovery codes: ten single-use codes shown once at confirmation (and at
//! each regeneration), for a user who lost the authenticator. Each is 80
//! random bits as 16 base32 letters in groups of four
//! (`abcd-efgh-ijkl-mnop`); only its SHA-256 is stored, which at 80 bits
//! leaves nothing to guess offline.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Codes per set.
pub const COUNT: usize = 10;
const BYTES: usize = 10;
const LETTERS: usize = 16;

/// A new set: each code as shown, and its stored hash.
pub fn generate() -> Result<Vec<(String, Vec<u8>)>> {
    (0..COUNT)
        .map(|_| {
            let mut bytes = [0u8; BYTES];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| Error::Internal("no randomness".into()))?;
            let letters = data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase();
            let shown = letters
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-");
            let hash = digest(&letters);
            Ok((shown, hash))
        })
        .collect()
}

/// The stored hash of a presented code, in any case, with or without its
/// hyphens and spaces; None when it cannot be a code.
pub fn presented_hash(presented: &str) -> Option<Vec<u8>> {
    if presented.len() > 64 {
        return None;
    }
    let letters: String = presented
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let plausible = letters.len() == LETTERS
        && letters
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    plausible.then(|| digest(&letters))
}

fn digest(letters: &str) -> Vec<u8> {
    Sha256::digest(letters.as_bytes()).to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Ten distinct codes of the documented shape, each found again from
    /// its shown form in any spelling; anything else is no code.
    #[test]
    fn codes_round_trip() {
        let set = generate().unwrap();
        assert_eq!(set.len(), COUNT);
        let distinct: std::collections::HashSet<_> = set.iter().map(|(c, _)| c.clone()).collect();
        assert_eq!(distinct.len(), COUNT);
        for (shown, hash) in &set {
            assert_eq!(shown.len(), 19, "{shown}");
            assert_eq!(shown.matches('-').count(), 3);
            assert_eq!(presented_hash(shown).as_ref(), Some(hash));
            assert_eq!(presented_hash(&shown.to_uppercase()).as_ref(), Some(hash));
            assert_eq!(
                presented_hash(&shown.replace('-', " ")).as_ref(),
                Some(hash)
            );
        }
        for bad in [
            "",
            "abcd-efgh",
            "abcd-efgh-ijkl-mno1",
            "abcd-efgh-ijkl-mnop-q",
            "ａbcd-efgh-ijkl-mnop",
            &"a".repeat(100),
        ] {
            assert_eq!(presented_hash(bad), None, "{bad:?}");
        }
    }
}
