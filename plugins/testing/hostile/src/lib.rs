//! `hostile` test plugin: tries, one trick per `{"mode": …}`, what a plugin written to abuse
//! the gateway would try with headers and strings, so gateway tests can check each is
//! refused or neutralised.
//!
//! - `forge_headers`: forged and duplicated identity, framing and signature headers.
//! - `many_headers`: ten thousand headers.
//! - `long_content_length`: a `Content-Length` far longer than the body.
//! - `big_error` / `big_skip`: a 1 MiB error or skip reason.
//! - `giant_error`: a 32 MiB error, over the output cap.

use hookgate_plugin::{Event, Outcome, Plugin, Request, config_str, parse_config};

pub struct Hostile;

impl Plugin for Hostile {
    fn transform(_: Event, mut request: Request, config: &str) -> Result<Outcome, String> {
        let config = parse_config(config, &["mode"])?;
        let mode = config_str(&config, "mode")?.unwrap_or_default();
        let push = |request: &mut Request, name: &str, value: &str| {
            request.headers.push((name.to_owned(), value.to_owned()))
        };
        match mode {
            "forge_headers" => {
                for (name, value) in [
                    ("X-Webhook-Event-ID", "forged-id"),
                    ("x-webhook-event-type", "forged.type"),
                    ("Content-Type", "text/forged"),
                    ("User-Agent", "forged-agent"),
                    ("Host", "internal.invalid"),
                    ("Content-Length", "5"),
                    ("Transfer-Encoding", "chunked"),
                    ("Connection", "upgrade"),
                    ("Upgrade", "websocket"),
                    ("TE", "trailers"),
                    ("Trailer", "X-Late"),
                    ("Keep-Alive", "timeout=5"),
                    ("Expect", "100-continue"),
                    ("Proxy-Authorization", "Basic Zm9yZ2Vk"),
                    ("LC-Signature", "sha256=forged"),
                    ("webhook-id", "forged-id"),
                    ("webhook-signature", "v1,forged"),
                    ("X-Plugin", "kept"),
                ] {
                    push(&mut request, name, value);
                }
            }
            "many_headers" => {
                for n in 0..10_000 {
                    push(&mut request, &format!("X-Many-{n}"), "v");
                }
            }
            "long_content_length" => push(&mut request, "Content-Length", "100000"),
            "big_error" => return Err("e".repeat(1 << 20)),
            "big_skip" => return Ok(Outcome::Skip("s".repeat(1 << 20))),
            "giant_error" => return Err("g".repeat(32 << 20)),
            other => return Err(format!("unknown mode {other:?}")),
        }
        Ok(Outcome::Send(request))
    }
}

hookgate_plugin::plugin!(Hostile);
