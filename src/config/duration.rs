//! Durations in config ("90s", "15m", "12h", "7d", "4w"); shared with the rotators crate.

pub use rotor_rotators::duration::Duration;

use serde::{Deserialize, Serialize};

/// `max_age`: a duration, or `"none"` for a credential that opts out of a maximum age (only
/// with a `max_age_reason`, which `rotor validate` prints as a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxAge {
    Limit(Duration),
    None,
}

impl<'de> Deserialize<'de> for MaxAge {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "none" {
            return Ok(MaxAge::None);
        }
        text.parse().map(MaxAge::Limit).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid max_age {text:?}: expected a duration such as \"90d\" or \"12h\", or \"none\" (with max_age_reason)"
            ))
        })
    }
}

impl Serialize for MaxAge {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            MaxAge::Limit(d) => serializer.collect_str(d),
            MaxAge::None => serializer.serialize_str("none"),
        }
    }
}
