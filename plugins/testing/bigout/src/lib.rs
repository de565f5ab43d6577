//! `bigout` test plugin: sends a body of a configured size (default 8 MiB), so gateway tests
//! can check the output-size cap.

use hookgate_plugin::{Event, Outcome, Plugin, Request, parse_config};

const DEFAULT_BYTES: u64 = 8 * 1024 * 1024;

pub struct BigOut;

impl Plugin for BigOut {
    fn transform(_: Event, mut request: Request, config: &str) -> Result<Outcome, String> {
        let config = parse_config(config, &["bytes"])?;
        let bytes = match config.get("bytes") {
            None | Some(serde_json::Value::Null) => DEFAULT_BYTES,
            Some(v) => v
                .as_u64()
                .ok_or("config field `bytes` must be a non-negative integer")?,
        };
        let bytes = usize::try_from(bytes).map_err(|_| "config field `bytes` is too large")?;
        request.body = vec![b'x'; bytes];
        Ok(Outcome::Send(request))
    }
}

hookgate_plugin::plugin!(BigOut);
