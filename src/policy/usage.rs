//! Retiring by evidence: whether the credential a run replaced may be retired now, from what
//! the provider says of its use (`Rotator::last_used`), as a pure function of the readings
//! and a clock. The engine samples and records; this decides.

use serde::{Deserialize, Serialize};

/// When the replaced credential is retired.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RetireWhen {
    /// At the end of `grace` (and earlier with `retire_after = "notified"`).
    #[default]
    Grace,
    /// Once it has been unused for `unused_for` after promotion, at the end of `grace` at the
    /// latest (see `on_still_used`).
    Unused,
}

/// What happens when grace ends and the replaced credential is still in use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnStillUsed {
    /// Retire it anyway, and alert with who still used it.
    #[default]
    Retire,
    /// Keep it, alert, and look again; never past its `max_age`.
    Wait,
}

/// A credential's `retire_when = "unused"` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// How long the credential must have gone unused (ms).
    pub unused_for: i64,
    pub on_still_used: OnStillUsed,
}

impl Gate {
    /// How often the provider is asked during grace: a third of `unused_for`, between a
    /// second and a minute (a retirement comes at most that late).
    pub fn sample_every(&self) -> i64 {
        (self.unused_for / 3).clamp(1_000, 60_000)
    }
}

/// The instants a decision reads, all in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readings {
    pub now: i64,
    /// When the run promoted the new credential.
    pub promoted_at: i64,
    /// When grace ends.
    pub grace_until: i64,
    /// When the replaced credential was last seen in use, if ever (any earlier sample too).
    pub last_seen: Option<i64>,
    /// Whether the provider gave evidence at all; without it only the timer decides.
    pub evidence: bool,
    /// The latest the replaced credential may be kept: when it reaches its `max_age`.
    pub keep_until: Option<i64>,
}

/// What to do with the replaced credential now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Unused for long enough (or grace is over without evidence): retire it.
    Retire,
    /// Grace is over and it is still in use: retire it and alert (`on_still_used = "retire"`,
    /// or `"wait"` that reached `max_age`).
    RetireStillUsed,
    /// Ask the provider again at this instant.
    Wait(i64),
    /// Grace is over, it is still in use, and the operator chose to keep it: alert, and ask
    /// again at this instant.
    KeepStillUsed(i64),
}

/// Decides from the readings (see `Decision`).
pub fn decide(gate: Gate, r: Readings) -> Decision {
    let grace_over = r.now >= r.grace_until;
    if !r.evidence {
        return if grace_over {
            Decision::Retire
        } else {
            Decision::Wait(r.grace_until)
        };
    }
    // Unused since the later of the promotion and its last use.
    let quiet_since = r
        .last_seen
        .map_or(r.promoted_at, |seen| seen.max(r.promoted_at));
    let quiet_enough_at = quiet_since + gate.unused_for;
    if r.now >= quiet_enough_at {
        return Decision::Retire;
    }
    let next = (r.now + gate.sample_every()).min(quiet_enough_at);
    if !grace_over {
        return Decision::Wait(next.min(r.grace_until));
    }
    match gate.on_still_used {
        OnStillUsed::Retire => Decision::RetireStillUsed,
        OnStillUsed::Wait => match r.keep_until {
            Some(limit) if r.now >= limit => Decision::RetireStillUsed,
            Some(limit) => Decision::KeepStillUsed(next.min(limit)),
            None => Decision::KeepStillUsed(next),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn gate(on_still_used: OnStillUsed) -> Gate {
        Gate {
            unused_for: 15 * MIN,
            on_still_used,
        }
    }

    fn at(now: i64, last_seen: Option<i64>) -> Readings {
        Readings {
            now,
            promoted_at: 0,
            grace_until: 60 * MIN,
            last_seen,
            evidence: true,
            keep_until: Some(120 * MIN),
        }
    }

    #[test]
    fn unused_since_promotion_retires_once_unused_for_has_passed() {
        let g = gate(OnStillUsed::Retire);
        assert_eq!(decide(g, at(5 * MIN, None)), Decision::Wait(6 * MIN));
        assert_eq!(decide(g, at(14 * MIN, None)), Decision::Wait(15 * MIN));
        assert_eq!(decide(g, at(15 * MIN, None)), Decision::Retire);
        // A use before promotion does not hold it: the quiet time counts from promotion.
        assert_eq!(decide(g, at(15 * MIN, Some(-5 * MIN))), Decision::Retire);
    }

    #[test]
    fn a_use_after_promotion_restarts_the_quiet_time() {
        let g = gate(OnStillUsed::Retire);
        assert_eq!(
            decide(g, at(20 * MIN, Some(20 * MIN))),
            Decision::Wait(21 * MIN)
        );
        assert_eq!(
            decide(g, at(34 * MIN, Some(20 * MIN))),
            Decision::Wait(35 * MIN)
        );
        assert_eq!(decide(g, at(35 * MIN, Some(20 * MIN))), Decision::Retire);
        // Never past the end of grace while waiting.
        assert_eq!(
            decide(g, at(59 * MIN + 30_000, Some(59 * MIN))),
            Decision::Wait(60 * MIN)
        );
    }

    #[test]
    fn still_used_at_the_end_of_grace_does_what_the_operator_chose() {
        let used = at(60 * MIN, Some(59 * MIN));
        assert_eq!(
            decide(gate(OnStillUsed::Retire), used),
            Decision::RetireStillUsed
        );
        assert_eq!(
            decide(gate(OnStillUsed::Wait), used),
            Decision::KeepStillUsed(61 * MIN)
        );
        // Waiting ends at max_age, whoever still uses it.
        let old = at(120 * MIN, Some(119 * MIN));
        assert_eq!(
            decide(gate(OnStillUsed::Wait), old),
            Decision::RetireStillUsed
        );
        let near = at(119 * MIN + 30_000, Some(119 * MIN));
        assert_eq!(
            decide(gate(OnStillUsed::Wait), near),
            Decision::KeepStillUsed(120 * MIN)
        );
    }

    #[test]
    fn without_evidence_the_timer_decides() {
        let mut r = at(10 * MIN, None);
        r.evidence = false;
        assert_eq!(decide(gate(OnStillUsed::Wait), r), Decision::Wait(60 * MIN));
        r.now = 60 * MIN;
        assert_eq!(decide(gate(OnStillUsed::Wait), r), Decision::Retire);
    }

    #[test]
    fn samples_come_between_a_second_and_a_minute_apart() {
        let mut g = gate(OnStillUsed::Retire);
        assert_eq!(g.sample_every(), MIN);
        g.unused_for = 2_000;
        assert_eq!(g.sample_every(), 1_000);
        g.unused_for = 90_000;
        assert_eq!(g.sample_every(), 30_000);
    }
}
