//! Deterministic legacy intention IDs.
//!
//! Consul still returns an `ID` for every intention although, since 1.9, intentions are
//! addressed by their source/destination pair. We derive that ID from the pair instead of
//! drawing a random UUID so that every Raft server computes the same ID on apply (no
//! randomness in the state machine) and the same pair always maps to the same ID.
//!
//! The hash is FNV-1a 128 (<http://www.isthe.com/chongo/tech/comp/fnv/>), written here so the
//! value never changes with the Rust toolchain (`std`'s `DefaultHasher` makes no such promise).

/// FNV-1a 128-bit offset basis.
const FNV128_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
/// FNV-1a 128-bit prime (2^88 + 2^8 + 0x3b).
const FNV128_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

fn fnv1a128(parts: &[&str]) -> u128 {
    let mut h = FNV128_OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u128::from(*b);
            h = h.wrapping_mul(FNV128_PRIME);
        }
    };
    for part in parts {
        // Length-prefix every field so ("ab", "c") and ("a", "bc") hash differently.
        feed(&(part.len() as u64).to_be_bytes());
        feed(part.as_bytes());
    }
    h
}

/// Legacy ID of the intention `src_ns/src => dst_ns/dst`, formatted as a UUID.
///
/// The version nibble is set to 8 and the variant to RFC 9562 ("custom" UUIDs), so any UUID
/// parser accepts the value while nobody mistakes it for a random (v4) UUID.
pub fn legacy_id(src_ns: &str, src: &str, dst_ns: &str, dst: &str) -> String {
    let mut v = fnv1a128(&[src_ns, src, dst_ns, dst]);
    // Version 8 in bits 76..80 (the 13th hex digit).
    v = (v & !(0xf_u128 << 76)) | (0x8_u128 << 76);
    // Variant 0b10 in bits 62..64 (the top of the 17th hex digit).
    v = (v & !(0x3_u128 << 62)) | (0x2_u128 << 62);
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a128_matches_reference_vectors() {
        // Reference values for the bare FNV-1a 128 function (no length prefix).
        let raw = |s: &str| {
            let mut h = FNV128_OFFSET;
            for b in s.as_bytes() {
                h ^= u128::from(*b);
                h = h.wrapping_mul(FNV128_PRIME);
            }
            h
        };
        assert_eq!(raw(""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        assert_eq!(raw("a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }

    #[test]
    fn legacy_id_is_deterministic_and_uuid_shaped() {
        let a = legacy_id("default", "web", "default", "db");
        assert_eq!(a, legacy_id("default", "web", "default", "db"));
        assert_eq!(a.len(), 36);
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(
            a.chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_eq!(&a[14..15], "8", "version nibble");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant bits");
    }

    #[test]
    fn legacy_id_distinguishes_fields() {
        let ids = [
            legacy_id("default", "web", "default", "db"),
            legacy_id("default", "db", "default", "web"),
            legacy_id("default", "we", "bdefault", "db"),
            legacy_id("default", "*", "default", "db"),
            legacy_id("other", "web", "default", "db"),
            legacy_id("default", "web", "other", "db"),
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn legacy_id_golden_value_never_changes() {
        // Stored state depends on this value: changing the hash is a breaking change.
        assert_eq!(legacy_id("default", "web", "default", "db"), GOLDEN_WEB_DB);
    }

    const GOLDEN_WEB_DB: &str = "6f08e8b0-01ce-8437-ba6a-71b53bbcc3a8";
}
