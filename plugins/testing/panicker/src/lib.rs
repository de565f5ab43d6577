//! `panicker` test plugin: does what a careless plugin does, reaching WASI imports the
//! gateway does not provide, so gateway tests can check such a failure is reported with
//! the import's name and dead-lettered at once instead of retried.
//!
//! - `{"mode": "panic"}`: panics (Rust's panic handler reads the environment and stderr).
//! - `{"mode": "env"}`: reads an environment variable.
//! - anything else: passes the request through.

use hookgate_plugin::{ConfigError, Event, Outcome, Plugin, Request, config_str, parse_config};

pub struct Panicker;

fn mode(config: &str) -> Result<String, ConfigError> {
    let config = parse_config(config, &["mode"])?;
    Ok(config_str(&config, "mode")?.unwrap_or_default().to_owned())
}

impl Plugin for Panicker {
    fn validate_config(config: &str) -> Result<(), ConfigError> {
        mode(config).map(drop)
    }

    fn transform(_: Event, request: Request, config: &str) -> Result<Outcome, String> {
        match mode(config)?.as_str() {
            "panic" => panic!("panicker was told to panic"),
            "env" => Err(format!("HOME is {:?}", std::env::var("HOME"))),
            _ => Ok(Outcome::Send(request)),
        }
    }
}

hookgate_plugin::plugin!(Panicker);
