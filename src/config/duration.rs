//! Go `time.Duration` text format, as used by `metav1.Duration` in the
//! KubeProxyConfiguration file ("30s", "1m0s", "1h30m", "500ms", "-1.5h").

use std::time::Duration;

use super::ConfigError;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Parses a Go duration string into signed nanoseconds.
///
/// Signed because the file format allows negative values and upstream only
/// rejects them at validation time (with a field-specific message).
pub(crate) fn parse_go_nanos(text: &str) -> Result<i64, String> {
    let invalid = || format!("invalid duration {text:?}");
    let mut rest = text;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    // A bare "0" is the one unit-less value Go accepts.
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }

    // Accumulated in u128 so that overflow of Go's int64 range is a plain
    // comparison rather than checked arithmetic at every step.
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let mut frac_digits = "";
        rest = after_int;
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (unit, after_unit) = rest.split_at(unit_len);
        rest = after_unit;
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "h" => 3600 * NANOS_PER_SECOND,
            "" => return Err(format!("missing unit in duration {text:?}")),
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };

        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole * 10 + u128::from(d - b'0');
            if whole > i64::MAX as u128 + 1 {
                return Err(invalid());
            }
        }
        let mut value = whole * unit_nanos;
        // Fraction digits beyond nanosecond precision cannot change the
        // result, so only the first 30 are looked at (keeps u128 in range).
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        for d in frac_digits.bytes().take(30) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        value += frac * unit_nanos / scale;
        total += value;
        if total > i64::MAX as u128 + 1 {
            return Err(invalid());
        }
    }

    if negative {
        Ok((-(total as i128)) as i64)
    } else if total > i64::MAX as u128 {
        Err(invalid())
    } else {
        Ok(total as i64)
    }
}

/// Parses a Go duration string ("30s", "1m30s", "1.5h", "250ms").
///
/// Negative durations are rejected because [`Duration`] cannot hold them;
/// use this for command-line flags such as `--iptables-sync-period`.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let nanos = parse_go_nanos(text).map_err(|message| ConfigError::InvalidDuration {
        value: text.to_string(),
        message,
    })?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| ConfigError::InvalidDuration {
            value: text.to_string(),
            message: "must be greater than or equal to 0".to_string(),
        })
}

/// Formats a duration exactly like Go's `time.Duration.String()`
/// ("0s", "500ms", "1m0s", "24h0m0s", "1.5s").
pub fn format_duration(d: Duration) -> String {
    format_go_nanos(i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

/// Like [`format_duration`] but for the signed values found in a file.
pub(crate) fn format_go_nanos(nanos: i128) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}\u{b5}s", with_fraction(n, 3));
    }
    if n < NANOS_PER_SECOND {
        return format!("{sign}{}ms", with_fraction(n, 6));
    }
    let secs = n / NANOS_PER_SECOND;
    let sub = n % NANOS_PER_SECOND;
    let seconds_part = with_fraction(secs % 60 * NANOS_PER_SECOND + sub, 9);
    let minutes = secs / 60;
    if minutes == 0 {
        return format!("{sign}{seconds_part}s");
    }
    let hours = minutes / 60;
    if hours == 0 {
        return format!("{sign}{minutes}m{seconds_part}s");
    }
    format!("{sign}{hours}h{}m{seconds_part}s", minutes % 60)
}

/// `value / 10^digits` with the remainder as a decimal fraction, trailing
/// zeros dropped (Go prints "1.5s", never "1.500s").
fn with_fraction(value: u128, digits: u32) -> String {
    let scale = 10u128.pow(digits);
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_duration_forms() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("0s", 0),
            ("30s", 30_000_000_000),
            ("1m0s", 60_000_000_000),
            ("15m0s", 900_000_000_000),
            ("24h0m0s", 86_400_000_000_000),
            ("500ms", 500_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("2h45m3.25s", 9_903_250_000_000),
            ("100ns", 100),
            ("3us", 3_000),
            ("3\u{b5}s", 3_000),
            ("3\u{3bc}s", 3_000),
            ("-1s", -1_000_000_000),
            ("+2m", 120_000_000_000),
            ("1h1h", 7_200_000_000_000),
            ("2562047h47m16.854775807s", i64::MAX),
            ("-2562047h47m16.854775808s", i64::MIN),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_nanos(text), Ok(*want), "parsing {text:?}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "s",
            "1",
            "30",
            "-",
            "1x",
            "1.2.3s",
            "h1",
            "1 s",
            "9223372036854775808ns",
        ] {
            assert!(parse_go_nanos(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_go_nanos("10").unwrap_err(),
            "missing unit in duration \"10\""
        );
        assert_eq!(
            parse_go_nanos("10d").unwrap_err(),
            "unknown unit \"d\" in duration \"10d\""
        );
    }

    #[test]
    fn public_parse_rejects_negative() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        let err = parse_duration("-1s").unwrap_err().to_string();
        assert!(
            err.contains("-1s") && err.contains("greater than or equal to 0"),
            "{err}"
        );
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(900), "15m0s"),
            (Duration::from_secs(86_400), "24h0m0s"),
            (Duration::from_secs(3_600), "1h0m0s"),
            (Duration::from_secs(5_400), "1h30m0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_nanos(1_500), "1.5\u{b5}s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(61_000_000_001), "1m1.000000001s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(*d), *want);
        }
        assert_eq!(format_go_nanos(-1_000_000_000), "-1s");
    }

    #[test]
    fn format_then_parse_round_trips() {
        for nanos in [1u64, 999, 1_000_001, 59_999_999_999, 3_723_000_000_000] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
