//! RFC 3339 timestamps, parsed rather than compared as strings.
//!
//! The Kaiku server writes `2026-11-25T17:46:42.176549Z` over REST and
//! `2026-11-25T17:46:42.176549+00:00` in `message_edit`: the same instant, two spellings.

/// An instant on the UTC time line, in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From nanoseconds since the Unix epoch.
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// RFC 3339 in UTC with microseconds, the way Kaiku writes `created_at`:
    /// `2026-11-25T17:00:00.000000Z` (nanoseconds are truncated).
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1_000_000_000);
        let micros = self.0.rem_euclid(1_000_000_000) / 1_000;
        let (days, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`; `None` for anything else.
    ///
    /// Accepts `t`/space for the separator and lower-case `z`, as RFC 3339 allows. Digits past
    /// nanoseconds are ignored.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20 || b.len() > 64 {
            return None;
        }
        let year = digits(b, 0, 4)?;
        let month = digits(b, 5, 2)?;
        let day = digits(b, 8, 2)?;
        let hour = digits(b, 11, 2)?;
        let minute = digits(b, 14, 2)?;
        let second = digits(b, 17, 2)?;
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        // 60 is a leap second; fold it onto the next second's start like most parsers do.
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut i = 19;
        let mut nanos: i64 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            let mut scale = 100_000_000;
            while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
                nanos += i64::from(d - b'0') * scale;
                scale /= 10;
                i += 1;
            }
            if i == start {
                return None;
            }
        }
        let offset_secs: i64 = match b.get(i)? {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
                let oh = digits(b, i + 1, 2)?;
                let om = digits(b, i + 4, 2)?;
                if oh > 23 || om > 59 {
                    return None;
                }
                let off = oh * 3600 + om * 60;
                if *sign == b'+' { off } else { -off }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
        secs.checked_mul(1_000_000_000)?
            .checked_add(nanos)
            .map(Self)
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let mut v = 0i64;
    for &c in b.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of days since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_in_kaikus_format() {
        for t in [
            "2026-11-25T17:46:36.273324Z",
            "1970-01-01T00:00:00.000000Z",
            "2024-02-29T23:59:59.999999Z",
            "1969-12-31T23:59:59.500000Z",
        ] {
            let ts = Timestamp::parse(t).unwrap();
            assert_eq!(ts.to_rfc3339(), t);
        }
    }

    #[test]
    fn z_and_plus_zero_offset_are_the_same_instant() {
        let rest = Timestamp::parse("2026-11-25T17:46:42.176549Z");
        let ws = Timestamp::parse("2026-11-25T17:46:42.176549+00:00");
        assert!(rest.is_some());
        assert_eq!(rest, ws);
    }

    #[test]
    fn epoch_and_known_instant() {
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        // date -d 2026-11-25T17:46:36Z +%s -> 1795628796
        assert_eq!(
            Timestamp::parse("2026-11-25T17:46:36.273324Z").map(Timestamp::unix_nanos),
            Some(1_795_628_796_273_324_000)
        );
    }

    #[test]
    fn offsets_shift_the_instant() {
        let a = Timestamp::parse("2026-01-01T01:00:00+01:00");
        let b = Timestamp::parse("2026-01-01T00:00:00Z");
        assert_eq!(a, b);
        assert!(Timestamp::parse("2025-12-31T23:00:00-01:00") == b);
    }

    #[test]
    fn fraction_order_is_numeric_not_lexical() {
        let a = Timestamp::parse("2026-01-01T00:00:00.9Z");
        let b = Timestamp::parse("2026-01-01T00:00:00.10Z");
        assert!(a > b);
    }

    #[test]
    fn rejects_malformed_input() {
        for s in [
            "",
            "2026-11-25",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T17:46:42.Z",
            "2026-11-25T17:46:42",
            "2026-11-25T17:46:42+0000",
            "2026-11-25T17:46:42Zjunk",
            "２026-11-25T17:46:42Z",
        ] {
            assert_eq!(Timestamp::parse(s), None, "{s}");
        }
    }
}
