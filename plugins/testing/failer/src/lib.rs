//! `failer` test plugin: always returns `err`, so gateway tests can check that a plugin
//! error fails the attempt and is retried.

use hookgate_plugin::{Event, Outcome, Plugin, Request};

pub struct Failer;

impl Plugin for Failer {
    fn transform(event: Event, _: Request, _: &str) -> Result<Outcome, String> {
        Err(format!("failer plugin refuses: {}", event.event_type))
    }
}

hookgate_plugin::plugin!(Failer);
