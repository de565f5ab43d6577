//! `tag-a` test plugin: passes the request through with `X-Plugin-Version: a`.

const VERSION: &str = "a";

#[path = "../../tag.rs"]
pub mod tag;
