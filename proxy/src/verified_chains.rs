//! A memo of the certificate chains a verifier has already accepted, so that a handshake with a
//! peer seen before does not check the CA's signature on the peer's certificate again.
//!
//! Most of a full mutual-TLS handshake's cost is public-key arithmetic, and one ECDSA
//! verification per side (the CA's signature over the peer's leaf, about 60 µs on this class of
//! CPU) gives the same answer every time the same peer presents the same certificate: a
//! sidecar sees the same few callers and upstreams over and over. The verifiers in
//! [`crate::tls`] ask this memo first:
//!
//! * an entry is the SHA-256 of the exact bytes presented (end entity and intermediates, each
//!   length-prefixed), added only after the full chain check (to the trust bundle, key usage,
//!   validity) accepted them; the SPIFFE ID check is the caller's and runs on every handshake;
//! * a hit is honoured only while `now` lies within every presented certificate's validity, so
//!   an expired or not-yet-valid certificate goes through the full check again (and fails
//!   there);
//! * the memo belongs to one verifier, and verifiers are built per rotation with their trust
//!   bundle: a new bundle starts with an empty memo, so a removed root never vouches for
//!   anything.
//!
//! What is never memoized: the handshake signature (`CertificateVerify`), which proves the peer
//! holds the certificate's key and covers this handshake's transcript, is verified on every
//! handshake. The memo holds at most [`CAPACITY`] entries (32 bytes and two timestamps each).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::digest;
use rustls::pki_types::{CertificateDer, UnixTime};

/// Entries kept per verifier. A full memo drops an arbitrary entry for a new one, so a proxy
/// talking to more peers than this still verifies correctly, only without the saving.
pub const CAPACITY: usize = 1024;

/// When a remembered chain may be accepted: the intersection of its certificates' validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    not_before: u64,
    not_after: u64,
}

type Key = [u8; 32];

/// Chains one verifier accepted, by digest.
#[derive(Debug, Default)]
pub struct VerifiedChains {
    entries: Mutex<HashMap<Key, Window>>,
}

fn key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Key {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for cert in std::iter::once(end_entity).chain(intermediates) {
        ctx.update(&(cert.len() as u64).to_be_bytes());
        ctx.update(cert);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The span in which every certificate of the chain is valid; `None` if one does not parse.
fn window(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Option<Window> {
    let mut w = Window {
        not_before: 0,
        not_after: u64::MAX,
    };
    for cert in std::iter::once(end_entity).chain(intermediates) {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
        let v = parsed.validity();
        let nb = u64::try_from(v.not_before.timestamp()).unwrap_or(0);
        let na = u64::try_from(v.not_after.timestamp()).unwrap_or(0);
        w.not_before = w.not_before.max(nb);
        w.not_after = w.not_after.min(na);
    }
    Some(w)
}

impl VerifiedChains {
    /// Whether exactly this chain was accepted before and every certificate in it is valid at
    /// `now`.
    pub fn contains(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        self.holds(&key(end_entity, intermediates), now)
    }

    /// Runs `full_check` on the chain unless exactly this chain passed it before and every
    /// certificate in it is still valid at `now`; remembers it once it passes. The chain is
    /// hashed once.
    pub fn check_once<T>(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        full_check: impl FnOnce() -> Result<T, rustls::Error>,
    ) -> Result<(), rustls::Error> {
        let k = key(end_entity, intermediates);
        if self.holds(&k, now) {
            return Ok(());
        }
        full_check()?;
        self.remember(k, end_entity, intermediates);
        Ok(())
    }

    /// Remembers a chain the full check has just accepted.
    pub fn insert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) {
        self.remember(key(end_entity, intermediates), end_entity, intermediates);
    }

    fn holds(&self, k: &Key, now: UnixTime) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(k).is_some_and(|w| {
            let t = now.as_secs();
            w.not_before <= t && t <= w.not_after
        })
    }

    fn remember(
        &self,
        k: Key,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) {
        let Some(w) = window(end_entity, intermediates) else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY
            && !entries.contains_key(&k)
            && let Some(evict) = entries.keys().next().copied()
        {
            entries.remove(&evict);
        }
        entries.insert(k, w);
    }

    /// Chains remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cert(
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["x.test".into()]).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn at(t: time::OffsetDateTime) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp() as u64))
    }

    #[test]
    fn a_remembered_chain_counts_only_within_every_certificates_validity() {
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let leaf = cert(now - day, now + 10 * day);
        let inter = cert(now - 2 * day, now + 5 * day);
        let chain = [inter.clone()];
        let memo = VerifiedChains::default();
        assert!(!memo.contains(&leaf, &chain, at(now)));
        memo.insert(&leaf, &chain);
        assert!(memo.contains(&leaf, &chain, at(now)));
        // The intermediate expires first: past it, the full check must run again.
        assert!(!memo.contains(&leaf, &chain, at(now + 6 * day)));
        // The leaf is not valid yet before its own not_before.
        assert!(!memo.contains(&leaf, &chain, at(now - day - day / 2)));
        // Other bytes are another chain: without the intermediate, or another leaf.
        assert!(!memo.contains(&leaf, &[], at(now)));
        let other = cert(now - day, now + 10 * day);
        assert!(!memo.contains(&other, &[inter], at(now)));
    }

    #[test]
    fn the_full_check_runs_until_it_passes_and_then_not_again() {
        let now = time::OffsetDateTime::now_utc();
        let leaf = cert(now - time::Duration::days(1), now + time::Duration::days(1));
        let memo = VerifiedChains::default();
        let runs = std::cell::Cell::new(0);
        let refuse = || {
            runs.set(runs.get() + 1);
            Err::<(), _>(rustls::Error::General("refused".into()))
        };
        assert!(memo.check_once(&leaf, &[], at(now), refuse).is_err());
        assert!(memo.check_once(&leaf, &[], at(now), refuse).is_err());
        let accept = || {
            runs.set(runs.get() + 1);
            Ok(())
        };
        memo.check_once(&leaf, &[], at(now), accept).unwrap();
        memo.check_once(&leaf, &[], at(now), accept).unwrap();
        assert_eq!(runs.get(), 3, "two refusals, one pass, then the memo");
    }

    #[test]
    fn moving_bytes_between_certificates_is_another_chain() {
        // Length prefixes: (A, B) and (A‖B[..1], B[1..]) must not share a key.
        let a = CertificateDer::from(vec![1u8, 2, 3]);
        let b = CertificateDer::from(vec![4u8, 5]);
        let a2 = CertificateDer::from(vec![1u8, 2, 3, 4]);
        let b2 = CertificateDer::from(vec![5u8]);
        assert_ne!(key(&a, &[b]), key(&a2, &[b2]));
    }

    #[test]
    fn the_memo_is_bounded_and_unparsable_chains_are_not_remembered() {
        let memo = VerifiedChains::default();
        memo.insert(&CertificateDer::from(vec![0u8; 8]), &[]);
        assert!(memo.is_empty());
        let now = time::OffsetDateTime::now_utc();
        let leaf = cert(now - time::Duration::days(1), now + time::Duration::days(1));
        let mut entries = memo.entries.lock().unwrap();
        for i in 0..CAPACITY as u64 {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.to_be_bytes());
            entries.insert(
                k,
                Window {
                    not_before: 0,
                    not_after: u64::MAX,
                },
            );
        }
        drop(entries);
        memo.insert(&leaf, &[]);
        assert_eq!(memo.len(), CAPACITY);
        assert!(memo.contains(&leaf, &[], at(now)));
    }
}
