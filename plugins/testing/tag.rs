//! Shared body of the `tag-a` / `tag-b` test plugins: pass the request through, marked with
//! the crate's `VERSION`, so gateway tests can tell which plugin version served an attempt
//! (hot reload, keep-previous-on-failure).

use hookgate_plugin::{Event, Outcome, Plugin, Request, set_header};

pub struct Tag;

impl Plugin for Tag {
    fn transform(_: Event, mut request: Request, _: &str) -> Result<Outcome, String> {
        set_header(&mut request.headers, "X-Plugin-Version", super::VERSION);
        Ok(Outcome::Send(request))
    }
}

hookgate_plugin::plugin!(Tag);
