//! Unix seconds as RFC 3339 local time for people reading `jobs show`
//! (issue #17). `--json` keeps the raw seconds for programs.
//!
//! The conversion is the C library's `localtime_r`, the one `date` and `ls -l`
//! use: it honours `TZ` and `/etc/localtime` exactly as the rest of the
//! machine does, and `libc` is already a dependency. The `time` crate refuses
//! to read the local offset once a second thread exists (the store has one),
//! and `chrono` would bring its own time-zone parser and a dozen crates into
//! the tree for one line of output.

/// Broken-down local time: what `localtime_r` fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i64,
    /// 1–12.
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// East of UTC, in seconds.
    pub utc_offset: i64,
}

impl LocalTime {
    /// The local time at `unix` seconds, or `None` if the C library cannot
    /// represent it (a year beyond `int`).
    // time_t and long are 32 bits on some targets: the conversions are not
    // useless there.
    #[allow(clippy::useless_conversion)]
    pub fn at(unix: i64) -> Option<LocalTime> {
        let t: libc::time_t = unix.try_into().ok()?;
        // SAFETY: `localtime_r` is the re-entrant form: it reads `t` and
        // writes only the `tm` we own (zero-initialised, a plain C struct of
        // integers and one pointer it sets to static zone-name storage, which
        // we never read). It reads TZ from the environment; this program never
        // calls setenv, so no thread can change TZ underneath it.
        #[allow(unsafe_code)]
        let tm = unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            if libc::localtime_r(&t, &mut tm).is_null() {
                return None;
            }
            tm
        };
        Some(LocalTime {
            year: i64::from(tm.tm_year) + 1900,
            month: u32::try_from(tm.tm_mon + 1).ok()?,
            day: u32::try_from(tm.tm_mday).ok()?,
            hour: u32::try_from(tm.tm_hour).ok()?,
            minute: u32::try_from(tm.tm_min).ok()?,
            // A leap second (60) is printed as the C library gives it.
            second: u32::try_from(tm.tm_sec).ok()?,
            utc_offset: i64::from(tm.tm_gmtoff),
        })
    }

    /// RFC 3339 §5.6 `date-time` with a numeric offset (`Z` for UTC).
    pub fn rfc3339(&self) -> String {
        let offset = if self.utc_offset == 0 {
            "Z".to_string()
        } else {
            let sign = if self.utc_offset < 0 { '-' } else { '+' };
            let minutes = self.utc_offset.abs() / 60;
            format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
        };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{offset}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// `unix` seconds as RFC 3339 local time; the raw number if the C library
/// cannot convert it (never a panic over a bad timestamp in the database).
pub fn rfc3339_local(unix: i64) -> String {
    LocalTime::at(unix).map_or_else(|| unix.to_string(), |t| t.rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(utc_offset: i64) -> LocalTime {
        LocalTime {
            year: 2026,
            month: 3,
            day: 7,
            hour: 9,
            minute: 5,
            second: 2,
            utc_offset,
        }
    }

    #[test]
    fn rfc3339_pads_fields_and_writes_utc_as_z() {
        assert_eq!(t(0).rfc3339(), "2026-03-07T09:05:02Z");
    }

    #[test]
    fn rfc3339_offsets_keep_their_sign_and_minutes() {
        assert_eq!(t(5 * 3600 + 30 * 60).rfc3339(), "2026-03-07T09:05:02+05:30");
        assert_eq!(
            t(-(3 * 3600 + 30 * 60)).rfc3339(),
            "2026-03-07T09:05:02-03:30"
        );
        assert_eq!(t(-3600).rfc3339(), "2026-03-07T09:05:02-01:00");
    }

    #[test]
    fn local_time_round_trips_through_its_own_offset() {
        // Whatever this machine's zone is, local time minus its offset is
        // the UTC instant we asked for.
        let unix = 1_780_000_000;
        let l = LocalTime::at(unix).unwrap();
        let days = days_from_civil(l.year, l.month, l.day);
        let secs = days * 86_400
            + i64::from(l.hour) * 3600
            + i64::from(l.minute) * 60
            + i64::from(l.second);
        assert_eq!(secs - l.utc_offset, unix);
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    /// `days_from_civil`), to check `localtime_r` independently.
    fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(m);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}
