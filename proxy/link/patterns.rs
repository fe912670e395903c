//! How `build.rs` turns `hot-symbols.txt` into linker input: mangled Rust names become
//! section-name globs without their hashes (which change with the toolchain, the dependency
//! versions and the crate graph), C and assembly names stay exact. Shared by the build script
//! and, for its tests, the crate (`lib.rs`); pure string work, no I/O.

/// A mangled Rust name as a section-name glob that survives rebuilds, or `None` for any other
/// name. Legacy (`_ZN…17h<16 hex>E`): the hash becomes `*`. v0 (`_R…`): every crate
/// disambiguator (`Cs<base62>_`) becomes `Cs*_`. Either: a trailing `.<digits>`,
/// `.llvm.<digits>` or `'<digits>` (LTO and profiler suffixes) is dropped and matched by `*`.
pub fn rust_pattern(name: &str) -> Option<String> {
    let base = strip_suffixes(name);
    if !base
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_$.".contains(&b))
    {
        return None;
    }
    if let Some(body) = base.strip_prefix("_ZN") {
        let hash_at = body.rfind("17h")?;
        let hash = &body[hash_at + 3..];
        let is_hash = hash.len() == 17
            && hash.ends_with('E')
            && hash[..16].bytes().all(|b| b.is_ascii_hexdigit());
        return is_hash.then(|| format!("_ZN{}17h*", &body[..hash_at]));
    }
    if base.starts_with("_R") {
        let mut p = String::with_capacity(base.len());
        let mut rest = base;
        while let Some(at) = rest.find("Cs") {
            p.push_str(&rest[..at + 2]);
            let after = &rest[at + 2..];
            match after.find('_') {
                Some(end) if after[..end].bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    p.push('*');
                    rest = &after[end..];
                }
                _ => rest = after,
            }
        }
        p.push_str(rest);
        p.push('*');
        return Some(p);
    }
    None
}

/// `name` without a trailing `.<digits>`, `.llvm.<digits>` or `'<digits>`.
fn strip_suffixes(name: &str) -> &str {
    let mut s = name;
    loop {
        let cut = s.rfind(['.', '\'']).filter(|&at| {
            let tail = &s[at + 1..];
            !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())
        });
        match cut {
            Some(at) => s = s[..at].strip_suffix(".llvm").unwrap_or(&s[..at]),
            None => return s,
        }
    }
}

/// A C or assembly symbol lld can take as it is (not a profiler's "(below main)").
pub fn is_plain_symbol(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_names_lose_their_hash_and_lto_suffixes() {
        let name = "_ZN6rustls6client5tls1319handle_server_hello17h0123456789abcdefE";
        assert_eq!(
            rust_pattern(name).as_deref(),
            Some("_ZN6rustls6client5tls1319handle_server_hello17h*")
        );
        let promoted = "_ZN4core3fmt5write17hfedcba9876543210E.llvm.1234567";
        assert_eq!(
            rust_pattern(promoted).as_deref(),
            Some("_ZN4core3fmt5write17h*")
        );
        // Not a legacy hash: no pattern (and not a plain symbol either).
        assert_eq!(rust_pattern("_ZN4core3fmt5write17hxyzE"), None);
    }

    #[test]
    fn v0_names_lose_their_crate_disambiguators() {
        let name = "_RNvNtCsgEmfK2I1SDS_4core3fmt5write'2";
        assert_eq!(
            rust_pattern(name).as_deref(),
            Some("_RNvNtCs*_4core3fmt5write*")
        );
        let two = "_RNvXsZ_NtCslNYArtu3iFV_5alloc6stringNtB5_6StringNtNtCsgEmfK2I1SDS_4core3fmt5Write9write_str.4005";
        assert_eq!(
            rust_pattern(two).as_deref(),
            Some("_RNvXsZ_NtCs*_5alloc6stringNtB5_6StringNtNtCs*_4core3fmt5Write9write_str*")
        );
    }

    #[test]
    fn c_names_stay_exact_and_profiler_names_are_dropped() {
        for c in ["aws_lc_0_47_0_X25519", "__ecp_nistz256_mul_montx", "rol64"] {
            assert_eq!(rust_pattern(c), None, "{c}");
            assert!(is_plain_symbol(c), "{c}");
        }
        assert!(!is_plain_symbol("(below main)"));
        assert_eq!(rust_pattern("(below main)"), None);
    }
}
