//! Stable content hashes (FNV-1a, 64 bit; std's hasher may change between releases): the data
//! cache's keys and a run directory's record of its data and weights.

use std::io::Read;
use std::path::Path;

/// FNV-1a's initial value.
pub const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// `hash` continued over `bytes`.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The hash of a file's content, read in chunks (a weights file of hundreds of MB is never held
/// whole).
pub fn file(path: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut hash = OFFSET;
    loop {
        match file.read(&mut buffer)? {
            0 => return Ok(hash),
            n => hash = fnv1a(hash, &buffer[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values_and_files() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(super::fnv1a(super::OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        let dir = std::env::temp_dir().join(format!("vprompt-fingerprint-{}", std::process::id()));
        std::fs::write(&dir, b"a").unwrap();
        assert_eq!(super::file(&dir).unwrap(), 0xaf63_dc4c_8601_ec8c);
        std::fs::remove_file(&dir).unwrap();
    }
}
