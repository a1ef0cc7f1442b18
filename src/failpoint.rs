//! Pause points for the crash tests, compiled only with the `failpoints` feature.
//!
//! With `ROTOR_FAILPOINT=<step>:<when>` (`when` is `before`, `effect` or `after`) the worker
//! prints `FAILPOINT <name>` to stderr when it reaches that point and then waits forever, so
//! that the test can SIGKILL it exactly there. `before`: the step is recorded as started but
//! has done nothing; `effect`: its side effect is done but not saved; `after`: it is saved.
//! Inside the vaults, `vault:<step>:<stage>` points sit between two operations of one step
//! (after the write of a promotion, before its bookkeeping and cleanup). `mint:minted` sits
//! between a rotator's mint and the vault write of its result (a provider-made secret that
//! only this process knows).

#[cfg(feature = "failpoints")]
fn armed(name: &str) -> bool {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("ROTOR_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("FAILPOINT {name}");
        return true;
    }
    false
}

#[cfg(feature = "failpoints")]
pub async fn pause_if_armed(name: &str) {
    if armed(name) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn pause_if_armed(_name: &str) {}
