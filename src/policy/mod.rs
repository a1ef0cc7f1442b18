//! "Is it due, and when?" as pure functions of the schedule, the last rotation and a clock
//! reading: no I/O, no sleeping, so every rule is unit-tested with fixed instants.

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

pub mod backoff;
pub mod schedule;
pub mod usage;

use rotor_rotators::duration::Duration;
use schedule::{CronExpr, DaySet};

/// How often a credential rotates.
#[derive(Debug, Clone, PartialEq)]
pub enum Cadence {
    Every(Duration),
    Cron(Box<CronExpr>),
    /// Only on request (`rotor rotate`).
    Manual,
}

/// Days and hours in which a rotation may start, in the schedule's time zone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub days: DaySet,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// Why a credential is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueReason {
    /// It has no current version yet.
    Initial,
    Schedule,
    /// The operator set `schedule.next`.
    Override,
    /// The schedule would let it grow older than `max_age`.
    MaxAge,
    /// Requested by `rotor rotate`.
    Manual,
}

impl DueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DueReason::Initial => "initial",
            DueReason::Schedule => "schedule",
            DueReason::Override => "override",
            DueReason::MaxAge => "max_age",
            DueReason::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Initial,
            Self::Schedule,
            Self::Override,
            Self::MaxAge,
            Self::Manual,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub at: DateTime<Utc>,
    pub reason: DueReason,
}

/// A credential's complete timing policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub cadence: Cadence,
    pub tz: Tz,
    pub window: Option<Window>,
    pub jitter: Duration,
    pub max_age: Option<Duration>,
    pub next_override: Option<DateTime<Utc>>,
}

const MINUTES_PER_DAY: i64 = 24 * 60;
const MINUTES_PER_WEEK: i64 = 7 * MINUTES_PER_DAY;

impl Window {
    fn minute_of_day(t: NaiveTime) -> i64 {
        (t.signed_duration_since(NaiveTime::MIN).num_minutes()).rem_euclid(MINUTES_PER_DAY)
    }

    /// Length of the window on a day it opens, in minutes (a window spanning midnight counts
    /// into the next day). Zero means it never opens.
    fn length_minutes(&self) -> i64 {
        (Self::minute_of_day(self.end) - Self::minute_of_day(self.start))
            .rem_euclid(MINUTES_PER_DAY)
    }

    pub fn never_opens(&self) -> bool {
        self.days.is_empty() || self.length_minutes() == 0
    }

    /// The open intervals of a week, in minutes from Monday 00:00, sorted.
    fn open_intervals(&self) -> Vec<(i64, i64)> {
        let start = Self::minute_of_day(self.start);
        let len = self.length_minutes();
        (0..7)
            .filter(|d| self.days.0 & (1 << d) != 0)
            .map(|d| {
                (
                    d * MINUTES_PER_DAY + start,
                    d * MINUTES_PER_DAY + start + len,
                )
            })
            .collect()
    }

    /// The longest time the window stays closed (wall clock, ignoring DST shifts).
    pub fn longest_closed(&self) -> Duration {
        if self.never_opens() {
            return Duration::from_secs(u64::MAX / 4);
        }
        let open = self.open_intervals();
        let mut longest = 0;
        for (i, &(_, end)) in open.iter().enumerate() {
            let next_start = match open.get(i + 1) {
                Some(&(s, _)) => s,
                None => open[0].0 + MINUTES_PER_WEEK,
            };
            longest = longest.max(next_start - end);
        }
        Duration::from_secs(longest.max(0) as u64 * 60)
    }

    /// Whether a rotation may start at `t`.
    pub fn contains(&self, t: DateTime<Utc>, tz: Tz) -> bool {
        let local = t.with_timezone(&tz).naive_local();
        let week_minute = local.weekday().num_days_from_monday() as i64 * MINUTES_PER_DAY
            + Self::minute_of_day(local.time());
        self.open_intervals().iter().any(|&(s, e)| {
            (s..e).contains(&week_minute) || (s..e).contains(&(week_minute + MINUTES_PER_WEEK))
        })
    }

    /// The first instant at or after `t` inside the window.
    pub fn next_open(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        if self.never_opens() || self.contains(t, tz) {
            return t;
        }
        let today: NaiveDate = t.with_timezone(&tz).date_naive();
        for offset in 0..=8 {
            let day = today + ChronoDuration::days(offset);
            if !self.days.contains(day.weekday()) {
                continue;
            }
            // A start time that falls into a DST gap opens at the first valid instant after it.
            let mut local = day.and_time(self.start);
            let opening = loop {
                if let Some(at) = tz.from_local_datetime(&local).earliest() {
                    break at.with_timezone(&Utc);
                }
                local += ChronoDuration::minutes(1);
            };
            if opening > t {
                return opening;
            }
        }
        t
    }
}

impl Schedule {
    /// The next time this credential is due, given when its current version was promoted
    /// (`None`: it has none yet). `None` for manual-only schedules.
    pub fn next_due(
        &self,
        id: &str,
        last_rotated: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<Due> {
        let Some(last) = last_rotated else {
            return Some(Due {
                at: now,
                reason: DueReason::Initial,
            });
        };
        if let Some(at) = self.next_override.filter(|&at| at > last) {
            return Some(Due {
                at,
                reason: DueReason::Override,
            });
        }
        let base = match &self.cadence {
            Cadence::Every(every) => last + every.to_chrono(),
            Cadence::Cron(expr) => {
                let local = last.with_timezone(&self.tz);
                expr.cron
                    .find_next_occurrence(&local, false)
                    .ok()?
                    .with_timezone(&Utc)
            }
            Cadence::Manual => return None,
        };
        let jittered = base + ChronoDuration::seconds(self.jitter_secs(id, base));
        let at = match &self.window {
            Some(window) => window.next_open(jittered, self.tz),
            None => jittered,
        };
        match self.max_age {
            Some(max_age) if at > last + max_age.to_chrono() => Some(Due {
                at: last + max_age.to_chrono(),
                reason: DueReason::MaxAge,
            }),
            _ => Some(Due {
                at,
                reason: DueReason::Schedule,
            }),
        }
    }

    /// Jitter that is the same for the same credential and due time, so that reconciling the
    /// same config twice computes the same `next_due_at`.
    fn jitter_secs(&self, id: &str, base: DateTime<Utc>) -> i64 {
        let range = self.jitter.as_secs();
        if range == 0 {
            return 0;
        }
        let digest = Sha256::new()
            .chain_update(id.as_bytes())
            .chain_update(base.timestamp().to_be_bytes())
            .finalize();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(word) % (range + 1)) as i64
    }

    /// The longest time two rotations may be apart under this schedule, or `None` for manual.
    /// `max_age` must not be shorter, or the schedule cannot honour it.
    pub fn longest_interval(&self) -> Option<Duration> {
        let cadence = match &self.cadence {
            Cadence::Every(every) => *every,
            Cadence::Cron(expr) => longest_cron_gap(expr, self.tz)?,
            Cadence::Manual => return None,
        };
        let window_wait = self.window.map_or(Duration::ZERO, |w| w.longest_closed());
        Some(Duration::from_secs(
            cadence
                .as_secs()
                .saturating_add(self.jitter.as_secs())
                .saturating_add(window_wait.as_secs()),
        ))
    }
}

/// The longest gap between consecutive fires of a cron expression over the coming year
/// (and a bit: yearly expressions need two fires).
fn longest_cron_gap(expr: &CronExpr, tz: Tz) -> Option<Duration> {
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()?
        .with_timezone(&tz);
    let horizon = start + ChronoDuration::days(800);
    let mut previous = expr.cron.find_next_occurrence(&start, false).ok()?;
    let mut longest = ChronoDuration::zero();
    for _ in 0..20_000 {
        let Ok(next) = expr.cron.find_next_occurrence(&previous, false) else {
            break;
        };
        longest = longest.max(next - previous);
        if next > horizon {
            break;
        }
        previous = next;
    }
    Some(Duration::from_secs(longest.num_seconds().max(0) as u64))
}

/// How a failed step is retried: capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: std::time::Duration,
    pub max: std::time::Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial: std::time::Duration::from_secs(10),
            max: std::time::Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1 = the first retry), or `None` when the
    /// attempts are exhausted. The delay is persisted, so a restart does not shorten it.
    ///
    /// The exponential step is capped at `max` first and the jitter taken inside it (half the
    /// step fixed, half random), so a delay never exceeds `max`: an operator who configured
    /// `max = "4s"` waits at most four seconds, and retries of many runs still spread out.
    pub fn delay(&self, attempt: u32) -> Option<std::time::Duration> {
        self.step(attempt).map(backoff::jittered)
    }

    /// The delay between attempts once the budget is spent, for a run that keeps retrying
    /// because giving up would leave it for a person (a failure after promotion on a
    /// transient cause): the cap, jittered within it.
    pub fn delay_past_budget(&self) -> std::time::Duration {
        backoff::jittered(self.max)
    }

    /// The capped exponential step of retry number `attempt`, before jitter.
    fn step(&self, attempt: u32) -> Option<std::time::Duration> {
        (attempt < self.max_attempts)
            .then(|| backoff::Backoff::new(self.initial, self.max).step(attempt))
    }
}

impl Schedule {
    /// When a credential whose run rolled back is tried again: backing off with its
    /// consecutive failures from `retry_max` (at least a minute, never more than a day), and
    /// only when its rotation window is open, as any scheduled rotation.
    pub fn retry_after_failure(
        &self,
        failures: i64,
        retry_max: std::time::Duration,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
        let wait = backoff::Backoff::new(retry_max.saturating_mul(2), DAY)
            .step(failures.clamp(0, i64::from(u32::MAX)) as u32)
            .max(std::time::Duration::from_secs(60));
        let at = now + ChronoDuration::milliseconds(wait.as_millis() as i64);
        match &self.window {
            Some(window) => window.next_open(at, self.tz),
            None => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn every(days: u64) -> Schedule {
        Schedule {
            cadence: Cadence::Every(Duration::from_secs(days * 86_400)),
            tz: chrono_tz::UTC,
            window: None,
            jitter: Duration::ZERO,
            max_age: None,
            next_override: None,
        }
    }

    #[test]
    fn a_credential_without_a_version_is_due_now() {
        let now = utc("2026-11-27T10:00:00Z");
        assert_eq!(
            every(7).next_due("a", None, now),
            Some(Due {
                at: now,
                reason: DueReason::Initial
            })
        );
    }

    #[test]
    fn every_counts_from_the_last_rotation_not_from_now() {
        let last = utc("2026-11-01T10:00:00Z");
        let now = utc("2026-11-27T10:00:00Z");
        let due = every(7).next_due("a", Some(last), now).unwrap();
        // Overdue after downtime: due once, at the missed time, not once per missed period.
        assert_eq!(due.at, utc("2026-11-08T10:00:00Z"));
    }

    #[test]
    fn cron_is_evaluated_in_the_schedule_time_zone() {
        let mut s = every(1);
        s.cadence = Cadence::Cron(Box::new("0 3 * * mon".parse().unwrap()));
        s.tz = chrono_tz::Europe::Berlin;
        let due = s
            .next_due(
                "a",
                Some(utc("2026-11-27T10:00:00Z")),
                utc("2026-11-27T10:00:00Z"),
            )
            .unwrap();
        assert_eq!(due.at, utc("2026-11-30T02:00:00Z")); // 03:00 CET
    }

    #[test]
    fn a_due_time_outside_the_window_waits_for_the_next_opening() {
        let mut s = every(7);
        s.window = Some(Window {
            days: "mon-fri".parse().unwrap(),
            start: NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(5, 0, 0).unwrap(),
        });
        // 2026-11-28 is a Saturday: the next opening is Monday 02:00.
        let due = s
            .next_due(
                "a",
                Some(utc("2026-11-21T12:00:00Z")),
                utc("2026-11-21T12:00:00Z"),
            )
            .unwrap();
        assert_eq!(due.at, utc("2026-11-30T02:00:00Z"));
        assert!(
            s.window
                .unwrap()
                .contains(utc("2026-11-30T04:59:00Z"), chrono_tz::UTC)
        );
        assert!(
            !s.window
                .unwrap()
                .contains(utc("2026-11-30T05:00:00Z"), chrono_tz::UTC)
        );
        // Closed from Friday 05:00 to Monday 02:00.
        assert_eq!(
            s.window.unwrap().longest_closed().as_secs(),
            (2 * 24 + 21) * 3600
        );
    }

    #[test]
    fn a_window_spanning_midnight_is_open_after_midnight() {
        let w = Window {
            days: "fri".parse().unwrap(),
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
        };
        assert!(w.contains(utc("2026-11-28T01:00:00Z"), chrono_tz::UTC)); // Saturday 01:00
        assert!(!w.contains(utc("2026-11-28T03:00:00Z"), chrono_tz::UTC));
        assert_eq!(w.longest_closed().as_secs(), (7 * 24 - 4) * 3600);
    }

    #[test]
    fn jitter_is_deterministic_bounded_and_spreads_credentials() {
        let mut s = every(7);
        s.jitter = Duration::from_secs(600);
        let last = utc("2026-11-01T00:00:00Z");
        let base = utc("2026-11-08T00:00:00Z");
        let a1 = s.next_due("a", Some(last), last).unwrap().at;
        assert_eq!(a1, s.next_due("a", Some(last), last).unwrap().at);
        let spread: std::collections::BTreeSet<_> = (0..50)
            .map(|i| s.next_due(&format!("c{i}"), Some(last), last).unwrap().at)
            .collect();
        assert!(spread.len() > 10);
        assert!(
            spread
                .iter()
                .all(|&t| t >= base && t <= base + ChronoDuration::seconds(600))
        );
    }

    #[test]
    fn max_age_caps_the_due_time_and_bounds_the_interval() {
        let mut s = every(30);
        s.max_age = Some(Duration::from_secs(20 * 86_400));
        let last = utc("2026-11-01T00:00:00Z");
        let due = s.next_due("a", Some(last), last).unwrap();
        assert_eq!(
            due,
            Due {
                at: utc("2026-11-21T00:00:00Z"),
                reason: DueReason::MaxAge
            }
        );
        assert_eq!(s.longest_interval().unwrap().as_secs(), 30 * 86_400);
        let mut c = every(1);
        c.cadence = Cadence::Cron(Box::new("0 3 1 */3 *".parse().unwrap()));
        assert!(c.longest_interval().unwrap().as_secs() >= 89 * 86_400);
    }

    #[test]
    fn manual_is_never_due_and_override_wins_once() {
        let mut s = every(7);
        s.cadence = Cadence::Manual;
        let last = utc("2026-11-01T00:00:00Z");
        assert_eq!(s.next_due("a", Some(last), last), None);
        s.next_override = Some(utc("2026-11-03T00:00:00Z"));
        assert_eq!(
            s.next_due("a", Some(last), last).unwrap().reason,
            DueReason::Override
        );
        assert_eq!(
            s.next_due("a", Some(utc("2026-11-04T00:00:00Z")), last),
            None
        );
    }

    #[test]
    fn retry_delays_grow_are_capped_and_run_out() {
        let p = RetryPolicy {
            max_attempts: 6,
            initial: std::time::Duration::from_secs(10),
            max: std::time::Duration::from_secs(60),
        };
        let d1 = p.delay(1).unwrap();
        assert!(
            d1 >= std::time::Duration::from_secs(5) && d1 <= std::time::Duration::from_secs(10),
            "{d1:?}"
        );
        assert_eq!(p.step(2), Some(std::time::Duration::from_secs(20)));
        assert_eq!(p.step(5), Some(std::time::Duration::from_secs(60)));
        assert_eq!(p.delay(6), None);
    }

    #[test]
    fn the_delay_between_attempts_never_exceeds_max_jitter_included() {
        // Observed before: 5.1-7.6 s between attempts with `max = "4s"`.
        let p = RetryPolicy {
            max_attempts: 50,
            initial: std::time::Duration::from_secs(1),
            max: std::time::Duration::from_secs(4),
        };
        let delays: Vec<_> = (0..2_000).map(|i| p.delay(1 + i % 49).unwrap()).collect();
        assert!(
            delays.iter().all(|d| *d <= p.max),
            "{:?}",
            delays.iter().max()
        );
        // Still jittered: capped attempts do not all wait exactly `max`.
        let capped: std::collections::BTreeSet<_> =
            (0..200).map(|_| p.delay(10).unwrap()).collect();
        assert!(capped.len() > 50, "{} distinct delays", capped.len());
        assert!(
            capped
                .iter()
                .all(|d| *d >= std::time::Duration::from_secs(2))
        );
    }

    #[test]
    fn a_retry_after_a_rollback_waits_for_the_window() {
        let mut s = every(7);
        // Open 02:00-05:00 on weekdays only.
        s.window = Some(Window {
            days: "mon-fri".parse().unwrap(),
            start: NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(5, 0, 0).unwrap(),
        });
        let max = std::time::Duration::from_secs(60);
        // Friday 04:59: the backoff lands after the window closed, so the retry is on Monday.
        let now = utc("2026-11-27T04:59:00Z");
        let at = s.retry_after_failure(1, max, now);
        assert_eq!(at, utc("2026-11-30T02:00:00Z"));
        // Inside the window, the backoff alone decides.
        let now = utc("2026-11-25T02:00:00Z");
        assert_eq!(
            s.retry_after_failure(1, max, now),
            now + ChronoDuration::seconds(120)
        );
        // Without a window, never more than a day.
        s.window = None;
        assert_eq!(
            s.retry_after_failure(40, std::time::Duration::from_secs(300), now),
            now + ChronoDuration::days(1)
        );
    }
}
