//! Go-style durations (`72h`, `1h30m`, `500ms`, `1.5h`) as Consul's API reads and writes them.
//!
//! Consul is written in Go and its HTTP API and configuration carry durations in the text form of
//! Go's `time.ParseDuration` / `time.Duration.String()` (for example `LeafCertTTL: "72h"` in the CA
//! configuration, and `"72h0m0s"` when it is read back). Existing clients and operators send these
//! strings, so this module accepts exactly that grammar and prints exactly that format, mapped onto
//! [`std::time::Duration`].
//!
//! Differences from Go, both deliberate: negative durations are rejected (every duration the mesh
//! handles is a TTL or a timeout), and values are limited to Go's range, `i64::MAX` nanoseconds
//! (about 292 years), so that what we accept Go would accept too.

use std::time::Duration;

/// Largest duration Go can represent: `i64::MAX` nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty (Go needs at least `0`).
    #[error("empty duration")]
    Empty,
    /// The string starts with `-`; the mesh's durations are TTLs and timeouts.
    #[error("negative duration {input:?} is not allowed")]
    Negative {
        /// The string as given.
        input: String,
    },
    /// The string is not `<number><unit>` pairs (stray characters, missing number).
    #[error(
        "invalid duration {input:?}: expected a number followed by a unit, as in \"72h\" or \"1h30m\""
    )]
    Invalid {
        /// The string as given.
        input: String,
    },
    /// A non-zero number has no unit after it (`30`).
    #[error("missing unit in duration {input:?} (valid units are ns, us, µs, ms, s, m, h)")]
    MissingUnit {
        /// The string as given.
        input: String,
    },
    /// A unit Go does not know (`30d`).
    #[error(
        "unknown unit {unit:?} in duration {input:?} (valid units are ns, us, µs, ms, s, m, h)"
    )]
    UnknownUnit {
        /// The string as given.
        input: String,
        /// The unknown unit as written.
        unit: String,
    },
    /// Beyond Go's `i64::MAX` nanoseconds (about 292 years).
    #[error("duration {input:?} is too large (the limit is about 292 years)")]
    Overflow {
        /// The string as given.
        input: String,
    },
}

/// Nanoseconds per unit, for the unit suffixes Go accepts.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts the ASCII spelling, the micro sign U+00B5 and the Greek mu U+03BC.
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration string such as `"72h"`, `"1h30m"`, `"500ms"` or `"1.5h"`.
///
/// The grammar is Go's: an optional `+`, then one or more `<number><unit>` pairs where the number
/// may have a fraction. A bare `"0"` is accepted without a unit, as in Go.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let input = || s.to_string();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut rest = s;
    if rest.starts_with('-') {
        return Err(DurationError::Negative { input: input() });
    }
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Invalid { input: input() });
    }

    let mut total: u128 = 0;
    while !rest.is_empty() {
        // Integer part.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let mut int_part: u128 = 0;
        for d in int_digits.bytes() {
            int_part = int_part * 10 + u128::from(d - b'0');
            if int_part > MAX_NANOS {
                return Err(DurationError::Overflow { input: input() });
            }
        }
        rest = after_int;

        // Optional fraction. Digits past the 20th are below a nanosecond for every unit, so they
        // are read but ignored (this also keeps the arithmetic inside u128).
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        let mut frac_len = 0;
        if let Some(r) = rest.strip_prefix('.') {
            frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            for d in r[..frac_len].bytes().take(20) {
                frac = frac * 10 + u128::from(d - b'0');
                scale *= 10;
            }
            rest = &r[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            // No digits at all (e.g. "h", ".s", "1h.m").
            return Err(DurationError::Invalid { input: input() });
        }

        // Unit: everything up to the next digit or dot.
        let unit_len = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let (unit, after_unit) = rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit { input: input() });
        }
        let per_unit = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            input: input(),
            unit: unit.to_string(),
        })?;
        rest = after_unit;

        let whole = int_part
            .checked_mul(per_unit)
            .ok_or_else(|| DurationError::Overflow { input: input() })?;
        // frac < 10^20 and per_unit < 2^42, so the product fits in u128.
        let fraction = frac * per_unit / scale;
        total = total
            .checked_add(whole)
            .and_then(|t| t.checked_add(fraction))
            .ok_or_else(|| DurationError::Overflow { input: input() })?;
        if total > MAX_NANOS {
            return Err(DurationError::Overflow { input: input() });
        }
    }

    // total <= i64::MAX, so both parts fit.
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats `d` exactly as Go's `time.Duration.String()` does: `"72h0m0s"`, `"1m30s"`,
/// `"1.5s"`, `"500ms"`, `"1.5µs"`, `"0s"`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        // Below one second Go switches to the largest sub-second unit that keeps the integer
        // part non-zero, with a fraction.
        return if nanos < 1_000 {
            format!("{nanos}ns")
        } else if nanos < 1_000_000 {
            format!(
                "{}\u{b5}s",
                with_fraction(u64::from(nanos / 1_000), nanos % 1_000, 3)
            )
        } else {
            format!(
                "{}ms",
                with_fraction(u64::from(nanos / 1_000_000), nanos % 1_000_000, 6)
            )
        };
    }
    let hours = secs / 3_600;
    let minutes = (secs % 3_600) / 60;
    let seconds = with_fraction(secs % 60, nanos, 9);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `int` followed by `.frac` (zero-padded to `digits`, trailing zeros trimmed) when `frac != 0`.
fn with_fraction(int: u64, frac: u32, digits: usize) -> String {
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0digits$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_consul_examples() {
        let cases = [
            ("72h", Duration::from_secs(72 * 3600)),
            ("30s", Duration::from_secs(30)),
            ("1h30m", Duration::from_secs(5400)),
            ("500ms", ms(500)),
            ("5m", Duration::from_secs(300)),
            ("72h0m0s", Duration::from_secs(72 * 3600)),
            ("1.5h", Duration::from_secs(5400)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            ("1ns", Duration::from_nanos(1)),
            ("1us", Duration::from_micros(1)),
            ("1\u{b5}s", Duration::from_micros(1)),
            ("1\u{3bc}s", Duration::from_micros(1)),
            (".5s", ms(500)),
            ("1.s", Duration::from_secs(1)),
            ("1.004s", ms(1004)),
            (
                "2h45m30.5s",
                Duration::from_millis((2 * 3600 + 45 * 60 + 30) * 1000 + 500),
            ),
            ("1m1m", Duration::from_secs(120)),
            (
                "0.000000000000000000001h5s",
                Duration::from_secs(5), // fraction far below a nanosecond is dropped
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::Negative { .. })
        ));
        for bad in ["+", "s", ".s", "1h.m", "abc", " 5s", "5 s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    DurationError::Invalid { .. } | DurationError::UnknownUnit { .. }
                ),
                "{bad}: {err:?}"
            );
        }
        for bad in ["5", "1.5", "1h5"] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::MissingUnit { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            parse_duration("3d"),
            Err(DurationError::UnknownUnit {
                input: "3d".into(),
                unit: "d".into()
            })
        );
        let msg = parse_duration("3d").unwrap_err().to_string();
        assert!(msg.contains("unknown unit \"d\""), "{msg}");
    }

    #[test]
    fn rejects_overflow() {
        // Go's limit is i64::MAX ns = 2562047h47m16.854775807s.
        assert_eq!(
            parse_duration("2562047h47m16.854775807s"),
            Ok(Duration::new(9_223_372_036, 854_775_807))
        );
        for big in [
            "2562047h47m16.854775808s",
            "2562048h",
            "9223372036854775808ns",
            "99999999999999999999999999999999999999999h",
        ] {
            assert!(
                matches!(parse_duration(big), Err(DurationError::Overflow { .. })),
                "{big}"
            );
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_100), "1.1\u{b5}s"),
            (ms(500), "500ms"),
            (Duration::from_micros(2_200), "2.2ms"),
            (Duration::from_secs(1), "1s"),
            (ms(1_500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(72 * 3600), "72h0m0s"),
            (Duration::new(3600, 500_000_000), "1h0m0.5s"),
            (Duration::new(1, 1), "1.000000001s"),
            (
                Duration::new(9_223_372_036, 854_775_807),
                "2562047h47m16.854775807s",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn format_then_parse_round_trips() {
        for d in [
            Duration::from_nanos(7),
            Duration::from_micros(1_234),
            Duration::new(3 * 3600 + 7, 123_456_789),
            Duration::from_secs(72 * 3600),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trip_any(nanos in 0u64..=i64::MAX as u64) {
            let d = Duration::from_nanos(nanos);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
