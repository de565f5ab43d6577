//! `tag-b` test plugin: passes the request through with `X-Plugin-Version: b`.

const VERSION: &str = "b";

#[path = "../../tag.rs"]
pub mod tag;
