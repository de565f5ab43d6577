//! `memhog` test plugin: grows memory until allocation fails, so gateway tests can check the
//! linear-memory cap.

use hookgate_plugin::{Event, Outcome, Plugin, Request};

const CHUNK: usize = 1 << 20;

/// Ends the call on a refused allocation with a plain `unreachable` trap: std's
/// allocation-failure path would first print through WASI, which traps as an unknown import.
fn out_of_memory() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

pub struct MemHog;

impl Plugin for MemHog {
    fn transform(_: Event, _: Request, _: &str) -> Result<Outcome, String> {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = Vec::new();
            if chunk.try_reserve_exact(CHUNK).is_err() || chunks.try_reserve(1).is_err() {
                out_of_memory();
            }
            // Write every page so the memory is really committed, and keep every chunk alive
            // (black_box) so none of it can be optimised away.
            chunk.resize(CHUNK, 0);
            for page in chunk.iter_mut().step_by(4096) {
                *page = 1;
            }
            chunks.push(core::hint::black_box(chunk));
        }
    }
}

hookgate_plugin::plugin!(MemHog);
