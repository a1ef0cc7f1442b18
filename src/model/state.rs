//! The rotation state machine of DESIGN.md as data: the states of a run, the steps between them
//! and where a failure leads. The engine looks transitions up here; nothing else decides them.
//! Which states count as finished and which as at rest is said here once; the store's SQL
//! spells the same sets, and a test holds the two together.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Planned,
    PendingStored,
    Applied,
    Verified,
    Promoted,
    Retiring,
    Completed,
    RollingBack,
    RolledBack,
    Stuck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Obtain the new secret and store it in the vault as `pending`.
    Mint,
    /// Install the new secret at the provider.
    Apply,
    /// Prove the new secret (read back from the vault) authenticates.
    Verify,
    /// Make pending current and old current previous, atomically in the vault.
    Promote,
    /// The durable grace timer: the old credential stays valid until it elapses.
    Grace,
    /// Invalidate the previous credential and drop it from the vault document.
    Retire,
    /// Undo a run that failed before promotion: remove the candidate, keep current.
    Rollback,
}

/// One edge of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: RunState,
    pub step: Step,
    pub to: RunState,
}

/// The happy path and the rollback path. A state with no entry here is terminal or waits for
/// a person (`stuck`).
pub const TRANSITIONS: &[Transition] = &[
    Transition {
        from: RunState::Planned,
        step: Step::Mint,
        to: RunState::PendingStored,
    },
    Transition {
        from: RunState::PendingStored,
        step: Step::Apply,
        to: RunState::Applied,
    },
    Transition {
        from: RunState::Applied,
        step: Step::Verify,
        to: RunState::Verified,
    },
    Transition {
        from: RunState::Verified,
        step: Step::Promote,
        to: RunState::Promoted,
    },
    Transition {
        from: RunState::Promoted,
        step: Step::Grace,
        to: RunState::Retiring,
    },
    Transition {
        from: RunState::Retiring,
        step: Step::Retire,
        to: RunState::Completed,
    },
    Transition {
        from: RunState::RollingBack,
        step: Step::Rollback,
        to: RunState::RolledBack,
    },
];

impl RunState {
    pub const ALL: [RunState; 10] = [
        RunState::Planned,
        RunState::PendingStored,
        RunState::Applied,
        RunState::Verified,
        RunState::Promoted,
        RunState::Retiring,
        RunState::Completed,
        RunState::RollingBack,
        RunState::RolledBack,
        RunState::Stuck,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Planned => "planned",
            RunState::PendingStored => "pending_stored",
            RunState::Applied => "applied",
            RunState::Verified => "verified",
            RunState::Promoted => "promoted",
            RunState::Retiring => "retiring",
            RunState::Completed => "completed",
            RunState::RollingBack => "rolling_back",
            RunState::RolledBack => "rolled_back",
            RunState::Stuck => "stuck",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The step that leaves this state, and where it leads.
    pub fn next(self) -> Option<Transition> {
        TRANSITIONS.iter().copied().find(|t| t.from == self)
    }

    /// Where a permanent failure (or exhausted retries) in this state leads. Before promotion
    /// the run rolls back; from promotion on the new credential is what consumers read, so
    /// rolling back would break them: the run is stuck and a person is alerted.
    pub fn on_failure(self) -> RunState {
        match self {
            RunState::Planned
            | RunState::PendingStored
            | RunState::Applied
            | RunState::Verified => RunState::RollingBack,
            _ => RunState::Stuck,
        }
    }

    /// The run is over: it holds no slot, and the credential may have a new live run.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Completed | RunState::RolledBack)
    }

    /// No worker drives the run: it is over, or stuck waiting for a person. It is still the
    /// credential's live run when stuck.
    pub fn is_at_rest(self) -> bool {
        self.is_terminal() || self == RunState::Stuck
    }

    /// Whether the new credential is what consumers read.
    pub fn is_promoted(self) -> bool {
        matches!(
            self,
            RunState::Promoted | RunState::Retiring | RunState::Completed
        )
    }
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Mint => "mint",
            Step::Apply => "apply",
            Step::Verify => "verify",
            Step::Promote => "promote",
            Step::Grace => "grace",
            Step::Retire => "retire",
            Step::Rollback => "rollback",
        }
    }
}

/// A state the store holds that this rotor does not know: written by a newer rotor, or by hand.
/// Reading it is an error, never a guess.
#[derive(Debug, thiserror::Error)]
#[error("unknown run state {0:?} in the store (written by a newer rotor, or edited by hand)")]
pub struct UnknownState(pub String);

impl std::str::FromStr for RunState {
    type Err = UnknownState;

    fn from_str(text: &str) -> Result<Self, UnknownState> {
        RunState::parse(text).ok_or_else(|| UnknownState(text.to_owned()))
    }
}

/// The store keeps a state as its name, in a text column of either backend.
impl<DB: sqlx::Database> sqlx::Type<DB> for RunState
where
    str: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for RunState
where
    &'r str: sqlx::Decode<'r, DB>,
{
    fn decode(
        value: <DB as sqlx::Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<DB>>::decode(value)?;
        Ok(text.parse::<RunState>()?)
    }
}

impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for RunState
where
    &'q str: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<DB>>::encode(self.as_str(), buf)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path_reaches_completed_and_nothing_leaves_a_terminal_state() {
        let mut state = RunState::Planned;
        let mut steps = Vec::new();
        while let Some(t) = state.next() {
            steps.push(t.step);
            state = t.to;
        }
        assert_eq!(state, RunState::Completed);
        assert_eq!(
            steps,
            [
                Step::Mint,
                Step::Apply,
                Step::Verify,
                Step::Promote,
                Step::Grace,
                Step::Retire
            ]
        );
        assert!(RunState::RolledBack.next().is_none());
        assert!(RunState::Stuck.next().is_none());
    }

    #[test]
    fn failures_roll_back_before_promotion_and_stick_after() {
        for s in [
            RunState::Planned,
            RunState::PendingStored,
            RunState::Applied,
            RunState::Verified,
        ] {
            assert_eq!(s.on_failure(), RunState::RollingBack);
        }
        for s in [
            RunState::Promoted,
            RunState::Retiring,
            RunState::RollingBack,
        ] {
            assert_eq!(s.on_failure(), RunState::Stuck);
        }
    }

    #[test]
    fn names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
        }
        let unknown = "paused".parse::<RunState>().unwrap_err();
        assert!(unknown.to_string().contains("unknown run state \"paused\""));
    }
}
