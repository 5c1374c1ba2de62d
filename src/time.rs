//! UTC calendar arithmetic for event timestamps (Unix milliseconds), without a
//! time-zone database: CloudWatch Logs times are UTC.

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`): (year, month 1–12, day 1–31).
pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// The day count since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`), the inverse of [`civil_from_days`].
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The times a search cluster takes: RFC 3339 has four-digit years, 0000 to
/// 9999.
pub const WRITABLE_MILLIS: std::ops::RangeInclusive<i64> =
    -62_167_219_200_000..=253_402_300_799_999;

/// Unix milliseconds of an RFC 3339 time (`2019-06-19T00:18:31Z`,
/// `2026-11-25T19:44:28.711+02:00`); None for anything else, a day that is
/// not in its month included, and a time an offset moves out of the years
/// 0000–9999. Text from a log line becomes a document's time only through
/// this, so the time a search cluster is given is always one it takes.
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |at: usize, width: usize| -> Option<i64> {
        b.get(at..at + width)?.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let mut at = 19;
    let mut millis = 0;
    if sep(at, b".") {
        let digits = b[at + 1..]
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        millis = num(at + 1, digits.min(3))? * 10i64.pow(3 - digits.min(3) as u32);
        at += 1 + digits;
    }
    let offset = match b.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == at + 6 && sep(at + 3, b":") => {
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let (m, d) = (u32::try_from(month).ok()?, u32::try_from(day).ok()?);
    let days = days_from_civil(year as i32, m, d);
    let valid_date = (1..=12).contains(&m) && civil_from_days(days) == (year as i32, m, d);
    if !valid_date || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    Some(secs * 1000 + millis).filter(|ms| WRITABLE_MILLIS.contains(ms))
}

/// Waits until `at`; without one, forever (a disabled timer in a `select!`).
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The wall clock in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 with milliseconds in UTC, e.g. `2026-11-25T19:44:28.711Z`.
pub fn rfc3339_millis(millis: i64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339_millis(millis, &mut out);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`rfc3339_millis`] to `out`.
pub fn write_rfc3339_millis(millis: i64, out: &mut Vec<u8>) {
    let secs = millis.div_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    if !(0..=9999).contains(&year) {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60,
            millis.rem_euclid(1000)
        );
        return;
    }
    // Every log event gets one: written digit by digit, not through `fmt`.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, u64::from(month));
    put(8, 2, u64::from(day));
    put(11, 2, (of_day / 3600) as u64);
    put(14, 2, (of_day % 3600 / 60) as u64);
    put(17, 2, (of_day % 60) as u64);
    put(20, 3, millis.rem_euclid(1000) as u64);
    out.extend_from_slice(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_635_868_711, "2026-11-25T19:44:28.711Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (1_432_826_855_000, "2015-05-28T15:27:35.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (253_402_300_800_000, "10000-01-01T00:00:00.000Z"),
        ];
        for (millis, want) in cases {
            assert_eq!(rfc3339_millis(millis), want, "{millis}");
        }
    }

    #[test]
    fn reads_rfc3339_and_nothing_else() {
        let times = [
            ("2019-06-19T00:18:31Z", 1_560_903_511_000),
            ("2026-11-25T19:44:28.711Z", 1_795_635_868_711),
            ("2026-11-25T21:44:28.711+02:00", 1_795_635_868_711),
            ("2026-11-25T19:44:28.7119999z", 1_795_635_868_711),
            ("2026-11-25 14:14:28.7-05:30", 1_795_635_868_700),
            ("2000-02-29T00:00:00Z", 951_782_400_000),
            ("1969-12-31T23:59:59.999Z", -1),
            ("0000-01-01T00:00:00Z", *WRITABLE_MILLIS.start()),
            ("9999-12-31T23:59:59.999Z", *WRITABLE_MILLIS.end()),
        ];
        for (text, millis) in times {
            assert_eq!(parse_rfc3339_millis(text), Some(millis), "{text}");
            assert_eq!(
                parse_rfc3339_millis(&rfc3339_millis(millis)),
                Some(millis),
                "{text}"
            );
        }
        for text in [
            "not a time",
            "",
            "2019-06-19",
            "2019-06-19T00:18:31",
            "2019-02-29T00:00:00Z",
            "2019-04-31T00:00:00Z",
            "2019-13-01T00:00:00Z",
            "2019-06-19T24:00:00Z",
            "2019-06-19T00:60:00Z",
            "2019-06-19T00:00:60Z",
            "2019-06-19T00:00:00.Z",
            "2019-06-19T00:00:00.1234567890Z",
            "2019-06-19T00:00:00+2:00",
            "2019-06-19T00:00:00+02:00x",
            "2019-06-19T00:00:00+24:00",
            "2019-06-19T00:00:00Zjunk",
            "+019-06-19T00:00:00Z",
            "2019-06-19T00:00:00\u{00e9}",
            // Moved by their offset out of four-digit years.
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+00:01",
        ] {
            assert_eq!(parse_rfc3339_millis(text), None, "{text:?}");
        }
    }
}
