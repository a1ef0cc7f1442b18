//! The run's lease as a side effect sees it: may this worker still act for the run?

use std::sync::atomic::{AtomicBool, Ordering};

use crate::clock::Clock;
use crate::store::{RunRow, Store, StoreError};

use super::{Ctx, Engine};

/// A run's fence for its rotator: is the run still this worker's?
pub(super) struct RunFence<'a> {
    store: &'a Store,
    clock: &'a dyn Clock,
    run_id: &'a str,
    worker: &'a str,
    margin_ms: i64,
    /// Whether the fence said no: the rotator's error is then the fence's, not the step's.
    refused: AtomicBool,
}

impl<'a> RunFence<'a> {
    pub(super) fn new(engine: &'a Engine, ctx: &Ctx<'_>, run: &'a RunRow) -> Self {
        RunFence {
            store: &engine.store,
            clock: engine.clock.as_ref(),
            run_id: &run.id,
            worker: &engine.worker,
            margin_ms: ctx.lease_margin_ms,
            refused: AtomicBool::new(false),
        }
    }

    /// Whether the fence said no (the rotator stopped because the run was no longer this
    /// worker's, or the store could not say).
    pub(super) fn refused(&self) -> bool {
        self.refused.load(Ordering::SeqCst)
    }
}

impl rotor_rotators::Fence for RunFence<'_> {
    fn still_owned(&self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        // A store that cannot answer is not a yes: the rotator stops, and the run is
        // abandoned to be resumed at this step (see `refused`).
        Box::pin(async move {
            let owned = self
                .store
                .lease_held(
                    self.run_id,
                    self.worker,
                    self.clock.now_ms() + self.margin_ms,
                )
                .await
                .unwrap_or(false);
            if !owned {
                self.refused.store(true, Ordering::SeqCst);
            }
            owned
        })
    }
}

/// How far before its claimed expiry a lease is checked in the store before a side effect,
/// and at most how long it must have left then (see `Ctx::lease_margin_ms`).
pub(super) const LEASE_MARGIN_MS: i64 = 5_000;

impl Engine {
    /// Whether another worker could have taken the run over by now. The lease this worker
    /// claimed lasts at least until `run.lease_until` (a save never shortens it, a heartbeat
    /// only extends it), and no other worker claims it before then: before that, minus a margin
    /// for clocks that disagree, asking the store is not needed.
    fn lease_may_have_lapsed(&self, run: &RunRow) -> bool {
        run.lease_until
            .is_none_or(|until| self.now() + LEASE_MARGIN_MS >= until)
    }

    /// Whether this worker may still make a side effect for the run: its lease cannot have
    /// lapsed yet, or the store says it holds it with `ctx.lease_margin_ms` still to run.
    pub(super) async fn holds_lease(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
    ) -> Result<bool, StoreError> {
        Ok(!self.lease_may_have_lapsed(run)
            || self
                .store
                .lease_held(&run.id, &self.worker, self.now() + ctx.lease_margin_ms)
                .await?)
    }
}
