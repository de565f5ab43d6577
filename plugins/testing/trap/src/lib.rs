//! `trap` test plugin: executes `unreachable`, so gateway tests can check trap handling.

use hookgate_plugin::{Event, Outcome, Plugin, Request};

pub struct Trap;

impl Plugin for Trap {
    fn transform(_: Event, _: Request, _: &str) -> Result<Outcome, String> {
        // The bare instruction, not a panic: a panic would first try to print through WASI.
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        std::process::abort();
    }
}

hookgate_plugin::plugin!(Trap);
