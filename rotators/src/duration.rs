//! Durations as operators write them: "90s", "15m", "12h", "7d", "4w", or sums like "1h30m".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time with second precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.0.as_secs().min(i64::MAX as u64) as i64)
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected a number and a unit (s, m, h, d, w) such as \"90s\", \"12h\" or \"7d\""
)]
pub struct ParseDurationError {
    input: String,
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError {
            input: input.to_owned(),
        };
        let mut rest = input.trim();
        if rest.is_empty() {
            return Err(err());
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            if digits == 0 {
                return Err(err());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| err())?;
            let unit = rest[digits..].chars().next().ok_or_else(err)?;
            let scale = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                'w' => 604_800,
                _ => return Err(err()),
            };
            total = number
                .checked_mul(scale)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(err)?;
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(Duration::from_secs(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        // Weeks only when they are whole: "30d" reads better than "4w2d".
        let weeks_fit = secs.is_multiple_of(604_800);
        for (unit, scale) in [
            ("w", 604_800),
            ("d", 86_400),
            ("h", 3_600),
            ("m", 60),
            ("s", 1),
        ] {
            if secs >= scale && (unit != "w" || weeks_fit) {
                write!(f, "{}{unit}", secs / scale)?;
                secs %= scale;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+[smhdw])+$",
            "description": "A duration: a number and a unit (s, m, h, d, w), e.g. \"90s\", \"12h\", \"7d\", \"1h30m\"."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_sums() {
        assert_eq!("90s".parse::<Duration>().unwrap().as_secs(), 90);
        assert_eq!("15m".parse::<Duration>().unwrap().as_secs(), 900);
        assert_eq!("12h".parse::<Duration>().unwrap().as_secs(), 43_200);
        assert_eq!("7d".parse::<Duration>().unwrap().as_secs(), 604_800);
        assert_eq!("4w".parse::<Duration>().unwrap().as_secs(), 2_419_200);
        assert_eq!("1h30m".parse::<Duration>().unwrap().as_secs(), 5_400);
        assert_eq!("0s".parse::<Duration>().unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "7",
            "d",
            "7y",
            "-1d",
            "1.5h",
            "7 d",
            "99999999999999999999w",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["90s", "1h30m", "7d", "4w", "1w2d3h4m5s"] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
        assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "1m30s");
        assert_eq!("30d".parse::<Duration>().unwrap().to_string(), "30d");
        assert_eq!("14d".parse::<Duration>().unwrap().to_string(), "2w");
        assert_eq!("30d".parse::<Duration>().unwrap().to_string(), "30d");
        assert_eq!("14d".parse::<Duration>().unwrap().to_string(), "2w");
    }
}
