//! `Time(target, format)`'s strptime-style formats (the Collector's
//! pkg/ottl/ottlfuncs/func_time.go through internal/coreinternal/timeutils,
//! which turns `%Y-%m-%d` into Go's `2006-01-02` layout and parses with
//! `time.ParseInLocation`): the directives below, each with Go's field
//! widths. Times without `%z` or `%Z` are read as UTC (the Collector reads
//! them in its host's local zone, which is UTC in a container).

use super::value::civil;

/// One piece of a compiled format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Literal(String),
    Year4,
    Year2,
    Month2,
    MonthShort,
    MonthLong,
    Day2,
    DayOfYear3,
    WeekdayShort,
    WeekdayLong,
    Hour24,
    Hour12,
    AmPm,
    Minute2,
    Second2,
    /// Fractional seconds: digits, as many as given.
    Fraction,
    /// `-0700`.
    Offset,
    /// A zone abbreviation: `UTC`, `GMT`, or any letters (offset 0).
    Zone,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Compiles a format; an unknown directive is an error (at load).
pub(crate) fn compile(format: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            return Err("format ends with a lone %".into());
        };
        let piece = match d {
            '%' => {
                literal.push('%');
                continue;
            }
            'Y' => Piece::Year4,
            'y' => Piece::Year2,
            'm' => Piece::Month2,
            'b' | 'h' => Piece::MonthShort,
            'B' => Piece::MonthLong,
            'd' => Piece::Day2,
            'j' => Piece::DayOfYear3,
            'a' => Piece::WeekdayShort,
            'A' => Piece::WeekdayLong,
            'H' => Piece::Hour24,
            'I' => Piece::Hour12,
            'p' => Piece::AmPm,
            'M' => Piece::Minute2,
            'S' => Piece::Second2,
            'f' | 'L' => Piece::Fraction,
            'z' => Piece::Offset,
            'Z' => Piece::Zone,
            other => return Err(format!("unsupported directive %{other} in time format")),
        };
        if !literal.is_empty() {
            out.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        out.push(piece);
    }
    if !literal.is_empty() {
        out.push(Piece::Literal(literal));
    }
    if out.is_empty() {
        return Err("format cannot be an empty string".into());
    }
    Ok(out)
}

fn digits(s: &str, n: usize) -> Option<(i64, &str)> {
    let head = s.get(..n)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &s[n..]))
}

fn word<'s>(s: &'s str, names: &[&str], short: bool) -> Option<(usize, &'s str)> {
    names.iter().enumerate().find_map(|(i, name)| {
        let name = if short { &name[..3] } else { name };
        let head = s.get(..name.len())?;
        head.eq_ignore_ascii_case(name)
            .then(|| (i, &s[name.len()..]))
    })
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn month_days(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `value` with a compiled format: nanoseconds since the epoch.
pub(crate) fn parse(pieces: &[Piece], value: &str) -> Result<i128, String> {
    let bad = || format!("cannot parse {value:?} with the time format");
    let (mut year, mut month, mut day) = (1970i64, 1i64, 1i64);
    let mut yday: Option<i64> = None;
    let (mut hour, mut minute, mut second, mut nanos) = (0i64, 0i64, 0i64, 0i64);
    let mut pm: Option<bool> = None;
    let mut offset = 0i64;
    let mut rest = value;
    for piece in pieces {
        rest = match piece {
            Piece::Literal(l) => rest.strip_prefix(l.as_str()).ok_or_else(bad)?,
            Piece::Year4 => {
                let (v, r) = digits(rest, 4).ok_or_else(bad)?;
                year = v;
                r
            }
            Piece::Year2 => {
                let (v, r) = digits(rest, 2).ok_or_else(bad)?;
                year = if v >= 69 { 1900 + v } else { 2000 + v };
                r
            }
            Piece::Month2 => {
                let (v, r) = digits(rest, 2).ok_or_else(bad)?;
                month = v;
                r
            }
            Piece::MonthShort | Piece::MonthLong => {
                let (i, r) = word(rest, &MONTHS, *piece == Piece::MonthShort).ok_or_else(bad)?;
                month = i as i64 + 1;
                r
            }
            Piece::Day2 => {
                let (v, r) = digits(rest, 2).ok_or_else(bad)?;
                day = v;
                r
            }
            Piece::DayOfYear3 => {
                let (v, r) = digits(rest, 3).ok_or_else(bad)?;
                yday = Some(v);
                r
            }
            Piece::WeekdayShort | Piece::WeekdayLong => {
                // Go checks the name but not that it fits the date.
                word(rest, &WEEKDAYS, *piece == Piece::WeekdayShort)
                    .ok_or_else(bad)?
                    .1
            }
            Piece::Hour24 | Piece::Hour12 => {
                let (v, r) = digits(rest, 2).ok_or_else(bad)?;
                hour = v;
                r
            }
            Piece::AmPm => {
                let head = rest.get(..2).ok_or_else(bad)?;
                pm = Some(match head.to_ascii_uppercase().as_str() {
                    "AM" => false,
                    "PM" => true,
                    _ => return Err(bad()),
                });
                &rest[2..]
            }
            Piece::Minute2 => {
                let (v, r) = digits(rest, 2).ok_or_else(bad)?;
                minute = v;
                r
            }
            Piece::Second2 => {
                let (v, r) = digits(rest, 2).ok_or_else(bad)?;
                second = v;
                r
            }
            Piece::Fraction => {
                let n = rest.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return Err(bad());
                }
                let frac = &rest[..n.min(9)];
                nanos = frac.parse::<i64>().map_err(|_| bad())? * 10i64.pow(9 - frac.len() as u32);
                &rest[n..]
            }
            Piece::Offset => {
                if let Some(r) = rest.strip_prefix('Z') {
                    offset = 0;
                    r
                } else {
                    let sign = match rest.as_bytes().first() {
                        Some(b'+') => 1,
                        Some(b'-') => -1,
                        _ => return Err(bad()),
                    };
                    let (h, r) = digits(&rest[1..], 2).ok_or_else(bad)?;
                    let (m, r) = digits(r, 2).ok_or_else(bad)?;
                    offset = sign * (h * 3600 + m * 60);
                    r
                }
            }
            Piece::Zone => {
                let n = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
                if n < 3 {
                    return Err(bad());
                }
                &rest[n..]
            }
        };
    }
    if !rest.is_empty() {
        return Err(format!("{}: extra text {rest:?}", bad()));
    }
    if let Some(pm) = pm {
        if !(1..=12).contains(&hour) {
            return Err(bad());
        }
        hour = match (pm, hour) {
            (false, 12) => 0,
            (true, 12) => 12,
            (true, h) => h + 12,
            (false, h) => h,
        };
    }
    if let Some(yd) = yday {
        if !(1..=if is_leap(year) { 366 } else { 365 }).contains(&yd) {
            return Err(bad());
        }
        let mut left = yd;
        month = 1;
        while left > month_days(year, month) {
            left -= month_days(year, month);
            month += 1;
        }
        day = left;
    }
    if !(1..=12).contains(&month)
        || !(1..=month_days(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(format!("{}: a field is out of range", bad()));
    }
    let days = days_from_civil(year, month, day);
    debug_assert_eq!(civil(days), (year, month as u32, day as u32));
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Ok(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(format: &str, value: &str) -> Result<i128, String> {
        parse(&compile(format)?, value)
    }

    /// ottlfuncs func_time_test.go, the cases in UTC.
    #[test]
    fn func_time_test_vectors() {
        let secs = |s: i64| i128::from(s) * 1_000_000_000;
        assert_eq!(t("%Y-%m-%d", "2023-01-01"), Ok(secs(1_672_531_200)));
        assert_eq!(
            t("%Y-%m-%dT%H:%M:%S", "2023-05-26T12:34:56"),
            Ok(secs(1_685_104_496))
        );
        assert_eq!(
            t("%Y-%m-%dT%H:%M:%S.%f", "2023-05-26T12:34:56.123456"),
            Ok(secs(1_685_104_496) + 123_456_000)
        );
        assert_eq!(
            t("%Y-%m-%dT%H:%M:%S%z", "2023-05-26T12:34:56+0200"),
            Ok(secs(1_685_104_496 - 7200))
        );
        assert_eq!(t("%d %b %Y", "02 Jan 2006"), Ok(secs(1_136_160_000)));
        assert_eq!(
            t("%A, %B %d, %Y", "Monday, January 02, 2006"),
            Ok(secs(1_136_160_000))
        );
        assert_eq!(
            t("%I:%M %p %y-%j", "03:04 PM 06-002"),
            Ok(secs(1_136_160_000 + 15 * 3600 + 240))
        );
        assert_eq!(t("%Y%m%d %Z", "20060102 UTC"), Ok(secs(1_136_160_000)));
        assert!(t("%Y-%m-%d", "2023-02-30").is_err());
        assert!(t("%Y-%m-%d", "2023-1-01").is_err());
        assert!(t("%Y-%m-%d", "2023-01-01 extra").is_err());
        assert!(t("%Q", "x").is_err());
        assert!(t("", "x").is_err());
    }
}
