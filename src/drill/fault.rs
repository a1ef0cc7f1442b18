//! The faults a drill injects into its own runs, to prove the unhappy paths.

use std::fmt;
use std::str::FromStr;

use crate::engine::StepError;
use crate::engine::disturbance::{Disturbance, Target};
use crate::engine::state::Step;

/// One fault, as `--inject` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The verify step refuses the candidate: the run rolls back at once.
    VerifyFail,
    /// Every vault write of the mint step fails: retried with backoff, then rolled back.
    VaultDown,
    /// Every provider call of the apply step times out: retried with backoff, then rolled back.
    ProviderTimeout,
    /// The worker dies at `STEP:WHEN` without saving; another worker resumes the run once the
    /// dead one's lease expires.
    Crash(String),
}

/// Where a crash can be injected: before a step, between its side effect and its save, after.
const WHEN: [&str; 3] = ["before", "effect", "after"];

/// Steps a crash can be injected at.
const STEPS: [Step; 7] = [
    Step::Mint,
    Step::Apply,
    Step::Verify,
    Step::Promote,
    Step::Grace,
    Step::Retire,
    Step::Rollback,
];

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "verify-fail" => return Ok(Fault::VerifyFail),
            "vault-down" => return Ok(Fault::VaultDown),
            "provider-timeout" => return Ok(Fault::ProviderTimeout),
            _ => {}
        }
        let usage = || {
            format!(
                "unknown fault `{text}`; expected verify-fail, vault-down, provider-timeout or crash@STEP[:WHEN] \
                 (STEP one of {}; WHEN one of {}, default effect)",
                STEPS.map(|s| s.as_str()).join(", "),
                WHEN.join(", ")
            )
        };
        let point = text.strip_prefix("crash@").ok_or_else(usage)?;
        let (step, when) = point.split_once(':').unwrap_or((point, "effect"));
        if !STEPS.iter().any(|s| s.as_str() == step) || !WHEN.contains(&when) {
            return Err(usage());
        }
        Ok(Fault::Crash(format!("{step}:{when}")))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::VerifyFail => f.write_str("verify-fail"),
            Fault::VaultDown => f.write_str("vault-down"),
            Fault::ProviderTimeout => f.write_str("provider-timeout"),
            Fault::Crash(point) => write!(f, "crash@{point}"),
        }
    }
}

/// A drill's worker suffers its fault in drill runs only; a crash kills it wherever the
/// point is reached.
impl Disturbance for Fault {
    fn dies_at(&self, _target: &Target<'_>, point: &str) -> bool {
        matches!(self, Fault::Crash(at) if at == point)
    }

    fn replaces(&self, target: &Target<'_>, step: Step) -> Option<StepError> {
        if !target.drill {
            return None;
        }
        match (self, step) {
            (Fault::VerifyFail, Step::Verify) => Some(StepError::permanent(
                "the candidate did not authenticate (injected by the drill)",
            )),
            (Fault::VaultDown, Step::Mint) => Some(StepError::transient(format!(
                "vault {} is unreachable (injected by the drill)",
                target.vault
            ))),
            (Fault::ProviderTimeout, Step::Apply) => Some(StepError::transient(format!(
                "provider: {} did not answer in time (injected by the drill)",
                target.provider
            ))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print_back() {
        for text in [
            "verify-fail",
            "vault-down",
            "provider-timeout",
            "crash@promote:after",
        ] {
            assert_eq!(text.parse::<Fault>().unwrap().to_string(), text);
        }
        assert_eq!(
            "crash@verify".parse::<Fault>().unwrap(),
            Fault::Crash("verify:effect".into())
        );
        assert!("crash@nowhere".parse::<Fault>().is_err());
        assert!("crash@mint:later".parse::<Fault>().is_err());
        assert!(
            "disk-full"
                .parse::<Fault>()
                .unwrap_err()
                .contains("verify-fail")
        );
    }
}
