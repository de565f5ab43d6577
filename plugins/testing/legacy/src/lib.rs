//! `legacy` test plugin: built against the first plugin contract, `hookgate:plugin@0.1.0`,
//! so gateway tests can check that such components still load and deliver. It passes the
//! request through with `X-Plugin-Contract: 0.1.0`, and refuses a config of `"refuse"` with
//! an `err`, which a 0.1.0 plugin cannot tell apart from any other failure.

#![cfg(target_arch = "wasm32")]
// The generated ABI shims flatten records into one parameter per field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "transformer",
});

// `generate!` already names the world's types (`Event`, `OutgoingRequest`, `Outcome`).
use hookgate::plugin::types::Header;

struct Legacy;

impl Guest for Legacy {
    fn transform(
        _event: Event,
        mut request: OutgoingRequest,
        config: String,
    ) -> Result<Outcome, String> {
        if config == "\"refuse\"" {
            return Err("legacy plugin refuses this config".into());
        }
        request.headers.push(Header {
            name: "X-Plugin-Contract".into(),
            value: "0.1.0".into(),
        });
        Ok(Outcome::Send(request))
    }
}

export!(Legacy);
