//! Keeps the pages of program code a running proxy has mapped to the code it actually runs.
//!
//! Most of a sidecar's resident memory is not its own data but the pages of its binary and of
//! the C library mapped into it (on a static-mode proxy about 8 of 10 MiB). Two things inflate
//! that beyond the code in use: start-up code (argument parsing, config loading, building the
//! TLS configs) that never runs again, and the kernel's fault-around, which maps up to 16
//! neighbouring pages of a file on every page fault, whether they are used or not.
//!
//! So once the proxy is ready, [`trim`] walks its own file-backed, read-only, never-written
//! mappings (program text and read-only data of the binary and its shared libraries):
//!
//! * `MADV_RANDOM` turns fault-around off for them, so a later fault maps the one page used;
//! * `MADV_DONTNEED` unmaps their pages; the code that runs afterwards faults its pages back in
//!   from the page cache (shared with every other process using the same file, and never
//!   written to).
//!
//! Mappings that hold private or written pages (`.data`, relocated read-only data, the heap,
//! stacks) are never touched: `MADV_DONTNEED` would discard their contents. A mapping
//! qualifies only when `/proc/self/smaps` shows it file-backed, not writable, and with no
//! anonymous pages (a page written in a private mapping becomes anonymous). Nothing is lost on failure: a mapping that cannot be
//! advised is left as it was.

use std::io;

/// What [`trim`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Mappings advised.
    pub mappings: usize,
    /// Resident kibibytes they held before.
    pub kib: u64,
}

/// One mapping of `/proc/self/smaps`, as far as [`trim`] needs it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    path: String,
    rss_kib: u64,
    /// Pages of the mapping that are the process's own copy (written after mapping: relocated
    /// data, a debugger's breakpoints). Dirty pages of the file itself (just written to disk)
    /// are the page cache's, shared, and not counted here.
    anonymous_kib: u64,
}

impl Mapping {
    /// Program text or read-only file data that was never written: safe to drop and refault.
    fn is_clean_file_code(&self) -> bool {
        self.path.starts_with('/')
            && (self.perms == "r-xp" || self.perms == "r--p")
            && self.anonymous_kib == 0
            && self.rss_kib > 0
    }
}

fn kib(v: &str) -> u64 {
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn parse(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((s, e)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16))
        {
            let perms = fields.next().unwrap_or_default().to_string();
            let path = fields.nth(3).unwrap_or_default().to_string();
            out.push(Mapping {
                start,
                end,
                perms,
                path,
                ..Mapping::default()
            });
            continue;
        }
        let Some(m) = out.last_mut() else { continue };
        if let Some(v) = line.strip_prefix("Rss:") {
            m.rss_kib = kib(v);
        } else if let Some(v) = line.strip_prefix("Anonymous:") {
            m.anonymous_kib = kib(v);
        }
    }
    out
}

#[expect(
    unsafe_code,
    reason = "madvise on a mapping of our own, checked clean and read-only"
)]
fn advise(m: &Mapping) -> io::Result<()> {
    use nix::sys::mman::{MmapAdvise, madvise};
    let addr = std::ptr::NonNull::new(m.start as *mut std::ffi::c_void)
        .ok_or_else(|| io::Error::other("null mapping"))?;
    let len = m.end - m.start;
    // SAFETY: the range is a whole mapping of this process, file-backed, not writable and
    // without private pages (`is_clean_file_code`): its contents are the file's, so dropping
    // the pages loses nothing; they are read back on the next access.
    unsafe {
        madvise(addr, len, MmapAdvise::MADV_RANDOM)?;
        madvise(addr, len, MmapAdvise::MADV_DONTNEED)?;
    }
    Ok(())
}

/// Unmaps the clean pages of program code and read-only data, and turns fault-around off for
/// them (see the module docs).
pub fn trim() -> io::Result<Trimmed> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut done = Trimmed::default();
    for m in parse(&smaps).iter().filter(|m| m.is_clean_file_code()) {
        if advise(m).is_ok() {
            done.mappings += 1;
            done.kib += m.rss_kib;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55ef8d924000-55ef8dbdb000 r--p 00000000 fe:00 8154274                    /usr/bin/meshproxy
Size:               2780 kB
Rss:                1428 kB
Anonymous:             0 kB
55ef8dbdb000-55ef8e466000 r-xp 002b7000 fe:00 8154274                    /usr/bin/meshproxy
Rss:                4876 kB
Anonymous:             0 kB
55ef8e466000-55ef8e4c1000 r--p 00b42000 fe:00 8154274                    /usr/bin/meshproxy
Rss:                 364 kB
Anonymous:           364 kB
55ef8e4c1000-55ef8e4c6000 rw-p 00b9d000 fe:00 8154274                    /usr/bin/meshproxy
Rss:                  20 kB
Anonymous:            20 kB
55ef8f000000-55ef8f021000 rw-p 00000000 00:00 0                          [heap]
Rss:                 176 kB
Anonymous:           176 kB
7f6118593000-7f6118793000 r-xp 00000000 fe:00 77                         /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1368 kB
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  84 kB
Anonymous:            84 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_qualify() {
        let maps = parse(SMAPS);
        assert_eq!(maps.len(), 7);
        let picked: Vec<(&str, &str, u64)> = maps
            .iter()
            .filter(|m| m.is_clean_file_code())
            .map(|m| (m.perms.as_str(), m.path.as_str(), m.rss_kib))
            .collect();
        assert_eq!(
            picked,
            [
                ("r--p", "/usr/bin/meshproxy", 1428),
                ("r-xp", "/usr/bin/meshproxy", 4876),
                ("r-xp", "/usr/lib/x86_64-linux-gnu/libc.so.6", 1368),
            ]
        );
        // The relocated read-only data (written at load), .data, heap and stack are left alone.
        assert_eq!(maps[2].start, 0x55ef8e466000);
        assert!(!maps[2].is_clean_file_code());
    }

    #[test]
    fn trimming_this_process_keeps_it_running_and_frees_pages() {
        // Runs on the test binary itself: afterwards code still runs (the test goes on and
        // returns), and the mappings trimmed hold far fewer pages than before (other tests
        // running meanwhile fault some back in, one page at a time).
        let resident = |starts: &[usize]| -> u64 {
            parse(&std::fs::read_to_string("/proc/self/smaps").unwrap())
                .iter()
                .filter(|m| starts.contains(&m.start))
                .map(|m| m.rss_kib)
                .sum()
        };
        let starts: Vec<usize> = parse(&std::fs::read_to_string("/proc/self/smaps").unwrap())
            .iter()
            .filter(|m| m.is_clean_file_code())
            .map(|m| m.start)
            .collect();
        let before = resident(&starts);
        let t = trim().unwrap();
        let after = resident(&starts);
        assert!(t.mappings > 0, "{t:?}");
        assert!(after * 2 < before, "before {before} KiB, after {after} KiB");
        // Behaviour is intact after the pages were dropped: real work still runs.
        let v: Vec<u64> = (0..1000).map(|i| i * i).collect();
        assert_eq!(v.iter().sum::<u64>(), 332_833_500);
    }
}
