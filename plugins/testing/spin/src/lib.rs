//! `spin` test plugin: never returns, so gateway tests can check the per-call CPU budget.

use hookgate_plugin::{Event, Outcome, Plugin, Request};

pub struct Spin;

impl Plugin for Spin {
    fn transform(_: Event, _: Request, _: &str) -> Result<Outcome, String> {
        // black_box hides the counter from the optimiser, so the loop cannot be folded away.
        let mut n: u64 = 0;
        loop {
            n = core::hint::black_box(n).wrapping_add(1);
        }
    }
}

hookgate_plugin::plugin!(Spin);
