//! Owns parsing of FHIR partial dates, dateTimes and instants into half-open UTC ranges
//! (milliseconds since the Unix epoch), as search and FHIRPath comparisons need them.

/// A half-open time range `[start, end)` in milliseconds since 1970-01-01T00:00:00Z.
/// Open ends (a Period without start or end) are `i64::MIN` / `i64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DateRange {
    /// Inclusive lower bound.
    pub start: i64,
    /// Exclusive upper bound.
    pub end: i64,
}

/// The precision a date/time literal was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// YYYY
    Year,
    /// YYYY-MM
    Month,
    /// YYYY-MM-DD
    Day,
    /// …Thh:mm
    Minute,
    /// …Thh:mm:ss
    Second,
    /// …Thh:mm:ss.fff (milliseconds or finer)
    Millisecond,
}

impl DateRange {
    /// The unbounded range.
    pub const ALL: DateRange = DateRange {
        start: i64::MIN,
        end: i64::MAX,
    };

    /// Does this range fully contain `other`?
    pub fn contains(&self, other: &DateRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Do the two ranges share at least one instant?
    pub fn overlaps(&self, other: &DateRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 for a proleptic Gregorian civil date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn num(s: &str, len: usize) -> Option<i64> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Parses a FHIR date, dateTime or instant (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`,
/// `YYYY-MM-DDThh:mm[:ss[.fff…]][Z|±hh:mm]`) into the range it denotes. A missing timezone is
/// taken as UTC. Returns `None` when the text is not such a value.
pub fn parse_range(text: &str) -> Option<(DateRange, Precision)> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let y = num(parts.next()?, 4)?;
    let m = match parts.next() {
        Some(p) => Some(num(p, 2)?),
        None => None,
    };
    let d = match parts.next() {
        Some(p) => Some(num(p, 2)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    if let Some(m) = m
        && !(1..=12).contains(&m)
    {
        return None;
    }
    if let (Some(m), Some(d)) = (m, d)
        && !(1..=days_in_month(y, m)).contains(&d)
    {
        return None;
    }
    let Some(time) = time else {
        return Some(match (m, d) {
            (None, _) => {
                let s = days_from_civil(y, 1, 1) * MS_PER_DAY;
                let e = days_from_civil(y + 1, 1, 1) * MS_PER_DAY;
                (DateRange { start: s, end: e }, Precision::Year)
            }
            (Some(m), None) => {
                let s = days_from_civil(y, m, 1) * MS_PER_DAY;
                let e = s + days_in_month(y, m) * MS_PER_DAY;
                (DateRange { start: s, end: e }, Precision::Month)
            }
            (Some(m), Some(d)) => {
                let s = days_from_civil(y, m, d) * MS_PER_DAY;
                (
                    DateRange {
                        start: s,
                        end: s + MS_PER_DAY,
                    },
                    Precision::Day,
                )
            }
        });
    };
    let (m, d) = (m?, d?);
    // Split off the timezone.
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(pos) = time.rfind(['+', '-']) {
        let (c, tz) = time.split_at(pos);
        let sign = if tz.starts_with('-') { -1 } else { 1 };
        let (hh, mm) = tz[1..].split_once(':')?;
        let (hh, mm) = (num(hh, 2)?, num(mm, 2)?);
        if hh > 14 || mm > 59 {
            return None;
        }
        (c, sign * (hh * 60 + mm) * 60_000)
    } else {
        (time, 0)
    };
    let mut cp = clock.split(':');
    let hh = num(cp.next()?, 2)?;
    let mi = num(cp.next()?, 2)?;
    let sec = cp.next();
    if cp.next().is_some() || hh > 23 || mi > 59 {
        return None;
    }
    let base = days_from_civil(y, m, d) * MS_PER_DAY + (hh * 3600 + mi * 60) * 1000 - offset_ms;
    let Some(sec) = sec else {
        return Some((
            DateRange {
                start: base,
                end: base + 60_000,
            },
            Precision::Minute,
        ));
    };
    let (ss, frac) = match sec.split_once('.') {
        Some((s, f)) => (s, Some(f)),
        None => (sec, None),
    };
    let ss = num(ss, 2)?;
    if ss > 60 {
        return None;
    }
    let start = base + ss * 1000;
    match frac {
        None => Some((
            DateRange {
                start,
                end: start + 1000,
            },
            Precision::Second,
        )),
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            let mut ms = 0i64;
            for (i, b) in f.bytes().take(3).enumerate() {
                ms += i64::from(b - b'0') * [100, 10, 1][i];
            }
            let s = start + ms;
            Some((
                DateRange {
                    start: s,
                    end: s + 1,
                },
                Precision::Millisecond,
            ))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: &str) -> DateRange {
        parse_range(t)
            .map(|x| x.0)
            .unwrap_or(DateRange { start: 0, end: 0 })
    }

    #[test]
    fn year_month_day_are_whole_periods() {
        assert_eq!(
            r("1970"),
            DateRange {
                start: 0,
                end: 365 * MS_PER_DAY
            }
        );
        assert_eq!(
            r("1970-02"),
            DateRange {
                start: 31 * MS_PER_DAY,
                end: 59 * MS_PER_DAY
            }
        );
        assert_eq!(r("2024-02").end - r("2024-02").start, 29 * MS_PER_DAY);
        assert_eq!(
            r("1970-01-02"),
            DateRange {
                start: MS_PER_DAY,
                end: 2 * MS_PER_DAY
            }
        );
    }

    #[test]
    fn timezones_are_normalised_to_utc() {
        assert_eq!(r("1970-01-01T01:00:00+01:00"), r("1970-01-01T00:00:00Z"));
        assert_eq!(r("1970-01-01T00:00:00-02:30").start, 9_000_000);
        assert_eq!(
            r("1970-01-01T00:00:01.5Z"),
            DateRange {
                start: 1500,
                end: 1501
            }
        );
        assert_eq!(r("1970-01-01T00:01").end, 120_000);
    }

    #[test]
    fn invalid_dates_are_rejected() {
        for t in [
            "",
            "20",
            "2020-13",
            "2021-02-29",
            "2020-01-01T25:00:00Z",
            "2020-1-01",
            "abc",
            "2020-01-01T10:00:00+1",
        ] {
            assert!(parse_range(t).is_none(), "{t}");
        }
        assert!(parse_range("2020-02-29").is_some());
    }
}
