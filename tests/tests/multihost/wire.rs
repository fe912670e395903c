//! What crossed the links, read from raw frames (the `AF_PACKET` captures): the TCP streams to
//! and from the servers' RPC port, reassembled from their SYN, must be nothing but TLS
//! records. Pure code over byte slices; the test only feeds it the frames.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

/// One TCP segment of an IPv4 frame.
struct Segment<'a> {
    flow: Flow,
    seq: u32,
    syn: bool,
    payload: &'a [u8],
}

/// One direction of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
}

/// Parses an Ethernet frame carrying IPv4/TCP; `None` for anything else.
fn segment(frame: &[u8]) -> Option<Segment<'_>> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let addr = |at: usize| -> Option<Ipv4Addr> {
        let b: [u8; 4] = ip.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    let tcp = ip.get(ihl..total.min(ip.len()))?;
    let port =
        |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?])) };
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    Some(Segment {
        flow: Flow {
            src: (addr(12)?, port(0)?),
            dst: (addr(16)?, port(2)?),
        },
        seq: u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?),
        syn: tcp.get(13)? & 0x02 != 0,
        payload: tcp.get(data_offset..)?,
    })
}

/// The byte streams of every flow from or to `port` whose SYN was captured, in sequence
/// order, each up to its end or to its first hole (a frame the capture missed).
pub fn streams(frames: &[Vec<u8>], port: u16) -> HashMap<Flow, Vec<u8>> {
    let mut isn: HashMap<Flow, u32> = HashMap::new();
    let mut parts: HashMap<Flow, Vec<(u32, &[u8])>> = HashMap::new();
    for s in frames.iter().filter_map(|f| segment(f)) {
        if s.flow.src.1 != port && s.flow.dst.1 != port {
            continue;
        }
        if s.syn {
            isn.insert(s.flow, s.seq.wrapping_add(1));
        } else if !s.payload.is_empty() {
            parts.entry(s.flow).or_default().push((s.seq, s.payload));
        }
    }
    let mut out = HashMap::new();
    for (flow, first) in isn {
        let mut segs = parts.remove(&flow).unwrap_or_default();
        segs.sort_by_key(|(seq, _)| seq.wrapping_sub(first));
        let mut bytes = Vec::new();
        for (seq, payload) in segs {
            let at = seq.wrapping_sub(first) as usize;
            if at > bytes.len() {
                break;
            }
            let fresh = bytes.len() - at;
            if fresh < payload.len() {
                bytes.extend_from_slice(&payload[fresh..]);
            }
        }
        out.insert(flow, bytes);
    }
    out
}

/// TLS record content types (RFC 8446 §5.1): change_cipher_spec, alert, handshake,
/// application_data.
const CONTENT_TYPES: [u8; 4] = [20, 21, 22, 23];
/// The largest record a peer may send (TLS 1.2's ciphertext limit, above TLS 1.3's).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// What [`tls_records`] found in one stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// Complete records in order: content type and the byte range (header included).
    pub records: Vec<(u8, Range<usize>)>,
    /// The offset and first bytes of what is not a TLS record header, if any.
    pub not_tls: Option<(usize, Vec<u8>)>,
}

impl Records {
    /// How many complete records of `content_type`.
    pub fn count(&self, content_type: u8) -> usize {
        self.records
            .iter()
            .filter(|(t, _)| *t == content_type)
            .count()
    }
}

/// Walks `stream` record by record from its first byte: each header must be a known content
/// type, version 3.1 to 3.3, and a length within the limit. A last incomplete record (the
/// capture stopped) is fine.
pub fn tls_records(stream: &[u8]) -> Records {
    let mut r = Records::default();
    let mut at = 0;
    while let Some(h) = stream.get(at..at + 5) {
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if !CONTENT_TYPES.contains(&h[0])
            || h[1] != 3
            || !(1..=3).contains(&h[2])
            || len > MAX_RECORD
        {
            let end = stream.len().min(at + 16);
            r.not_tls = Some((at, stream[at..end].to_vec()));
            break;
        }
        if at + 5 + len > stream.len() {
            break;
        }
        r.records.push((h[0], at..at + 5 + len));
        at += 5 + len;
    }
    r
}

/// Where `needle` occurs in `bytes`, ignoring ASCII case.
pub fn find_all(bytes: &[u8], needle: &str) -> Vec<usize> {
    let needle = needle.as_bytes();
    bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w.eq_ignore_ascii_case(needle))
        .map(|(i, _)| i)
        .collect()
}

/// True when `frame` is TCP from or to `port`.
pub fn on_port(frame: &[u8], port: u16) -> bool {
    segment(frame).is_some_and(|s| s.flow.src.1 == port || s.flow.dst.1 == port)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame from 10.0.0.1:`sport` to 10.0.0.2:`dport`.
    fn frame(sport: u16, dport: u16, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let total = u16::try_from(20 + 20 + payload.len()).unwrap();
        f.extend([0x45, 0, total.to_be_bytes()[0], total.to_be_bytes()[1]]);
        f.extend([0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend(sport.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend(seq.to_be_bytes());
        f.extend([
            0,
            0,
            0,
            0,
            0x50,
            if syn { 0x02 } else { 0x18 },
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn streams_are_reassembled_from_the_syn_up_to_a_hole() {
        let isn = u32::MAX - 2; // the sequence numbers wrap inside the stream
        let frames = vec![
            frame(40000, 8300, isn, true, b""),
            frame(40000, 8300, isn.wrapping_add(5), false, b"efg"),
            frame(40000, 8300, isn.wrapping_add(1), false, b"abcd"),
            // A retransmission overlapping both.
            frame(40000, 8300, isn.wrapping_add(3), false, b"cdef"),
            // After a hole: not part of the stream.
            frame(40000, 8300, isn.wrapping_add(20), false, b"zz"),
            // No SYN seen: ignored; another port: ignored.
            frame(40001, 8300, 7, false, b"mid-stream"),
            frame(40002, 9999, 1, true, b""),
        ];
        let got = streams(&frames, 8300);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got.values().next().unwrap(), b"abcdefg");
        assert!(on_port(&frames[0], 8300) && !on_port(&frames[6], 8300));
    }

    #[test]
    fn records_are_walked_and_plaintext_is_named() {
        let mut tls = vec![22, 3, 1, 0, 2, 0xaa, 0xbb, 23, 3, 3, 0, 1, 0xcc];
        let r = tls_records(&tls);
        assert_eq!(r.not_tls, None);
        assert_eq!(r.records, vec![(22, 0..7), (23, 7..13)]);
        assert_eq!(find_all(&tls, "HTTP"), Vec::<usize>::new());
        tls.extend_from_slice(b"PRI * HTTP/2.0");
        let r = tls_records(&tls);
        assert_eq!(r.not_tls.map(|(at, _)| at), Some(13));
        assert_eq!(find_all(&tls, "http"), vec![19]);
    }
}
