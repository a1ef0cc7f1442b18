//! The `schedule` of a credential as operators write it, checked as it is parsed so that an
//! error points at the value that is wrong.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use rotor_rotators::duration::Duration;

/// When a credential rotates: exactly one of `every`, `cron` or `manual = true`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Rotate this long after the last successful rotation, e.g. "30d".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
    /// Rotate at the times of this cron expression (5 fields, e.g. "0 3 * * mon"), in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronExpr>,
    /// IANA time zone of `cron` and `window`, e.g. "Europe/Berlin". Defaults to UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TimeZone>,
    /// Days and hours when a rotation may start; a due rotation waits for the next opening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowConfig>,
    /// Never rotate on a schedule: only `rotor rotate ID` (and `max_age` alerts) apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// Override the next rotation time once (RFC 3339), e.g. to move it out of a freeze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Timestamp>,
}

/// Days of the week and a time range in which a rotation may start.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Days the window opens: "mon-fri", "sat,sun", "mon,wed-fri". Defaults to every day.
    #[serde(default)]
    pub days: DaySet,
    /// Opening time of day, "HH:MM", in the schedule's time zone.
    pub start: TimeOfDay,
    /// Closing time of day, "HH:MM"; earlier than `start` means the window spans midnight.
    pub end: TimeOfDay,
}

/// A parsed cron expression, kept with its source text.
#[derive(Clone)]
pub struct CronExpr {
    pub text: String,
    pub cron: croner::Cron,
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for CronExpr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let cron = croner::Cron::from_str(text).map_err(|e| {
            format!("invalid cron expression {text:?}: {e}; expected 5 fields: minute hour day-of-month month day-of-week")
        })?;
        Ok(CronExpr {
            text: text.to_owned(),
            cron,
        })
    }
}

/// An IANA time zone name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl FromStr for TimeZone {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        text.parse::<chrono_tz::Tz>()
            .map(TimeZone)
            .map_err(|_| format!("unknown time zone {text:?}: expected an IANA name such as \"Europe/Berlin\" or \"UTC\""))
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// A time of day, "HH:MM".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(pub NaiveTime);

impl FromStr for TimeOfDay {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        NaiveTime::parse_from_str(text, "%H:%M")
            .map(TimeOfDay)
            .map_err(|_| {
                format!("invalid time of day {text:?}: expected \"HH:MM\" such as \"02:00\"")
            })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%H:%M"))
    }
}

/// A set of weekdays, written "mon-fri", "sat,sun", ... Bit 0 is Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaySet(pub u8);

impl Default for DaySet {
    fn default() -> Self {
        DaySet(0b111_1111)
    }
}

impl DaySet {
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl FromStr for DaySet {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "invalid days {text:?}: expected day names mon..sun, ranges and commas, such as \"mon-fri\" or \"sat,sun\""
            )
        };
        let day = |name: &str| {
            DAY_NAMES
                .iter()
                .position(|d| d.eq_ignore_ascii_case(name.trim()))
                .ok_or_else(err)
        };
        let mut bits = 0u8;
        for part in text.split(',') {
            match part.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (day(from)?, day(to)?);
                    let mut d = from;
                    loop {
                        bits |= 1 << d;
                        if d == to {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << day(part)?,
            }
        }
        Ok(DaySet(bits))
    }
}

impl fmt::Display for DaySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = (0..7)
            .filter(|d| self.0 & (1 << d) != 0)
            .map(|d| DAY_NAMES[d])
            .collect();
        f.write_str(&names.join(","))
    }
}

/// An RFC 3339 instant, as a TOML string or a TOML offset date-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

impl FromStr for Timestamp {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(|_| {
                format!("invalid time {text:?}: expected RFC 3339 such as \"2026-12-01T03:00:00Z\"")
            })
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // TOML date-times arrive as their own type; their Display is RFC 3339.
        let value = toml::Value::deserialize(deserializer)?;
        let text = match &value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Datetime(d) => d.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected an RFC 3339 time, found {}",
                    other.type_str()
                )));
            }
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Deserialize, serialize and describe a type through its `FromStr` / `Display`.
macro_rules! string_form {
    ($ty:ty, $name:literal, $description:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $description })
            }
        }
    };
}

string_form!(
    CronExpr,
    "CronExpr",
    "A 5-field cron expression, e.g. \"0 3 * * mon\"."
);
string_form!(
    TimeZone,
    "TimeZone",
    "An IANA time zone name, e.g. \"Europe/Berlin\"."
);
string_form!(TimeOfDay, "TimeOfDay", "A time of day, \"HH:MM\".");
string_form!(
    DaySet,
    "DaySet",
    "Days of the week: \"mon-fri\", \"sat,sun\", \"mon,wed-fri\"."
);

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

impl Serialize for CronExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

macro_rules! display_serialize {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
display_serialize!(TimeZone, TimeOfDay, DaySet);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_sets_parse_ranges_lists_and_wraparound() {
        assert_eq!(
            "mon-fri".parse::<DaySet>().unwrap().to_string(),
            "mon,tue,wed,thu,fri"
        );
        assert_eq!("sat,sun".parse::<DaySet>().unwrap().to_string(), "sat,sun");
        assert_eq!(
            "fri-mon".parse::<DaySet>().unwrap().to_string(),
            "mon,fri,sat,sun"
        );
        assert!("mon-fry".parse::<DaySet>().is_err());
        assert!("".parse::<DaySet>().is_err());
    }

    #[test]
    fn cron_timezone_and_time_errors_say_what_was_expected() {
        assert!("0 3 * * mon".parse::<CronExpr>().is_ok());
        assert!(
            "0 3 * *"
                .parse::<CronExpr>()
                .unwrap_err()
                .contains("5 fields")
        );
        assert!("Europe/Berlin".parse::<TimeZone>().is_ok());
        assert!(
            "Europe/Atlantis"
                .parse::<TimeZone>()
                .unwrap_err()
                .contains("IANA")
        );
        assert!("25:00".parse::<TimeOfDay>().is_err());
    }
}
