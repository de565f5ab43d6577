//! Shared support for hookgate transform plugins: plain Rust mirrors of the WIT types, the
//! helpers every plugin needs (config checking, payload parsing, header editing, time
//! formatting), and the one copy of the `hookgate:plugin/transformer` bindings.
//!
//! Plugins implement [`Plugin`] on plain types and call [`plugin!`]; only that macro touches
//! the generated bindings, so plugin logic builds and tests natively without them.
//!
//! Nothing here may reach WASI at run time: the gateway links components with no WASI
//! implementation, so every import traps. Hence `serde_json`'s `BTreeMap`-backed map, no
//! clocks and no printing.

use serde_json::{Map, Value};

/// The event being delivered (mirror of WIT `event`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub timestamp: f64,
    pub payload: String,
}

/// The HTTP request about to be sent (mirror of WIT `outgoing-request`); headers are
/// `(name, value)` pairs in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What to do with the attempt (mirror of WIT `outcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Send(Request),
    Skip(String),
}

/// A transform plugin, written against the plain types above.
pub trait Plugin {
    /// A JSON Schema of the config, shown by `GET /api/v1/plugins`; `None` documents none.
    const CONFIG_SCHEMA: Option<&'static str> = None;

    /// Refuse a config no delivery could succeed with, naming the field. The gateway asks
    /// before it accepts an event or saves a configuration naming the plugin. The default
    /// accepts any JSON.
    fn validate_config(config: &str) -> Result<(), ConfigError> {
        serde_json::from_str::<Value>(config)
            .map(drop)
            .map_err(|e| ConfigError::whole(format!("is not valid JSON: {e}")))
    }

    fn transform(event: Event, request: Request, config: &str) -> Result<Outcome, String>;
}

/// What is wrong with a config (mirror of WIT `config-error`): `pointer` is an RFC 6901
/// pointer into the config, empty for the config as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub pointer: String,
    pub message: String,
}

impl ConfigError {
    /// A problem with the field `key` of the config object.
    pub fn field(key: &str, message: impl Into<String>) -> Self {
        Self {
            pointer: format!("/{}", key.replace('~', "~0").replace('/', "~1")),
            message: message.into(),
        }
    }

    /// A problem with the config as a whole.
    pub fn whole(message: impl Into<String>) -> Self {
        Self {
            pointer: String::new(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pointer.strip_prefix('/') {
            None => write!(f, "config {}", self.message),
            Some(field) => write!(f, "config field `{field}` {}", self.message),
        }
    }
}

impl From<ConfigError> for String {
    fn from(error: ConfigError) -> String {
        error.to_string()
    }
}

/// Parses `config` as a JSON object (or `null`, read as empty) whose keys are all in
/// `allowed`; rejecting unknown keys turns typos into a recorded error instead of a silent
/// default.
pub fn parse_config(config: &str, allowed: &[&str]) -> Result<Map<String, Value>, ConfigError> {
    let value: Value = serde_json::from_str(config)
        .map_err(|e| ConfigError::whole(format!("is not valid JSON: {e}")))?;
    let map = match value {
        Value::Null => Map::new(),
        Value::Object(map) => map,
        _ => return Err(ConfigError::whole("must be a JSON object or null")),
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ConfigError::field(
            key,
            format!(
                "is not recognised (expected one of: {})",
                allowed.join(", ")
            ),
        ));
    }
    Ok(map)
}

/// An optional string field of a parsed config.
pub fn config_str<'a>(
    config: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ConfigError::field(key, "must be a string")),
    }
}

/// The property names a config JSON Schema allows, sorted, when it refuses any other
/// (`additionalProperties: false`); `None` otherwise. For plugins' tests that tie their
/// schema to their parser.
pub fn closed_schema_keys(schema: &str) -> Option<Vec<String>> {
    let schema: Value = serde_json::from_str(schema).ok()?;
    if schema.get("additionalProperties") != Some(&Value::Bool(false)) {
        return None;
    }
    let keys = schema.get("properties")?.as_object()?.keys().cloned();
    Some(sorted(&keys.collect::<Vec<_>>()))
}

/// `keys` as owned strings, sorted.
pub fn sorted(keys: &[impl AsRef<str>]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|key| key.as_ref().to_owned()).collect();
    keys.sort();
    keys
}

/// The canonical payload `{"event_id","event_type","timestamp","data"}`, kept whole in `raw`
/// so plugins can forward it without re-assembling it.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub event_id: String,
    pub event_type: String,
    pub timestamp: f64,
    pub data: Value,
    pub raw: Value,
}

impl Payload {
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: Value =
            serde_json::from_str(text).map_err(|e| format!("payload is not valid JSON: {e}"))?;
        let obj = raw.as_object().ok_or("payload is not a JSON object")?;
        let string = |key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("payload field `{key}` is missing or not a string"))
        };
        let event_id = string("event_id")?;
        let event_type = string("event_type")?;
        let timestamp = obj
            .get("timestamp")
            .and_then(Value::as_f64)
            .ok_or("payload field `timestamp` is missing or not a number")?;
        let data = obj
            .get("data")
            .cloned()
            .ok_or("payload field `data` is missing")?;
        Ok(Self {
            event_id,
            event_type,
            timestamp,
            data,
            raw,
        })
    }
}

/// Sets a header, replacing every existing one of that name (compared case-insensitively) in
/// the position of the first, so header order otherwise survives.
pub fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    let mut placed = false;
    headers.retain_mut(|(n, v)| {
        if !n.eq_ignore_ascii_case(name) {
            return true;
        }
        if placed {
            return false;
        }
        placed = true;
        *n = name.to_owned();
        *v = value.to_owned();
        true
    });
    if !placed {
        headers.push((name.to_owned(), value.to_owned()));
    }
}

/// Unix seconds (with fraction) to integer milliseconds, truncating toward the past.
///
/// Rounding to whole microseconds first absorbs binary float error, so `…​.123` (stored as
/// `…​.12299999`) still yields `…123` rather than `…122`.
pub fn timestamp_millis(ts: f64) -> Result<i64, String> {
    // ±9e12 s (≈285,000 years) keeps the microsecond value inside i64.
    if !ts.is_finite() || ts.abs() > 9e12 {
        return Err(format!("timestamp {ts} is out of range"));
    }
    let micros = (ts * 1e6).round() as i64;
    Ok(micros.div_euclid(1000))
}

/// Unix seconds to RFC 3339 UTC with millisecond precision, e.g. `2025-07-31T18:07:55.115Z`.
///
/// Computed by hand (Howard Hinnant's days-to-civil algorithm) because plugins have no clock
/// or time-zone facilities to call.
pub fn rfc3339_millis(ts: f64) -> Result<String, String> {
    let ms = timestamp_millis(ts)?;
    let days = ms.div_euclid(86_400_000);
    let ms_of_day = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return Err(format!(
            "timestamp {ts} is outside the years RFC 3339 can express"
        ));
    }
    let (secs, milli) = (ms_of_day / 1000, ms_of_day % 1000);
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

/// Exports a [`Plugin`] implementation as the component's `describe`, `validate-config` and
/// `transform`. `describe` answers with the plugin crate's package name, version and
/// description from its `Cargo.toml`.
#[macro_export]
macro_rules! plugin {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            impl $crate::glue::Described for $ty {
                const NAME: &'static str = env!("CARGO_PKG_NAME");
                const VERSION: &'static str = env!("CARGO_PKG_VERSION");
                const DESCRIPTION: &'static str = env!("CARGO_PKG_DESCRIPTION");
            }
            type HookgatePluginExport = $crate::glue::Adapter<$ty>;
    $crate::glue::export!(HookgatePluginExport with_types_in $crate::glue);
        };
    };
}

#[cfg(target_arch = "wasm32")]
extern crate self as hookgate_plugin;

/// The generated bindings and the adapter from them to the plain types.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
// The generated ABI shims flatten records into one parameter per field.
#[allow(clippy::too_many_arguments)]
pub mod glue {
    pub use wit_bindgen;

    wit_bindgen::generate!({
        world: "transformer",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "hookgate_plugin::glue",
        runtime_path: "hookgate_plugin::glue::wit_bindgen::rt",
    });

    use hookgate::plugin::types as wit;

    pub struct Adapter<P>(core::marker::PhantomData<P>);

    /// What `describe` says; implemented by [`plugin!`](crate::plugin) from the plugin
    /// crate's `Cargo.toml`.
    pub trait Described {
        const NAME: &'static str;
        const VERSION: &'static str;
        const DESCRIPTION: &'static str;
    }

    impl<P: super::Plugin + Described> Guest for Adapter<P> {
        fn describe() -> wit::PluginInfo {
            wit::PluginInfo {
                name: P::NAME.into(),
                version: P::VERSION.into(),
                description: P::DESCRIPTION.into(),
                config_schema: P::CONFIG_SCHEMA.map(Into::into),
            }
        }

        fn validate_config(config: String) -> Result<(), wit::ConfigError> {
            P::validate_config(&config).map_err(|error| wit::ConfigError {
                pointer: error.pointer,
                message: error.message,
            })
        }

        fn transform(
            event: wit::Event,
            request: wit::OutgoingRequest,
            config: String,
        ) -> Result<wit::Outcome, String> {
            let event = super::Event {
                id: event.id,
                event_type: event.event_type,
                timestamp: event.timestamp,
                payload: event.payload,
            };
            let request = super::Request {
                url: request.url,
                headers: request
                    .headers
                    .into_iter()
                    .map(|h| (h.name, h.value))
                    .collect(),
                body: request.body,
            };
            Ok(match P::transform(event, request, &config)? {
                super::Outcome::Skip(reason) => wit::Outcome::Skip(reason),
                super::Outcome::Send(r) => wit::Outcome::Send(wit::OutgoingRequest {
                    url: r.url,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(name, value)| wit::Header { name, value })
                        .collect(),
                    body: r.body,
                }),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_absorbs_float_error() {
        assert_eq!(timestamp_millis(1753985275.1154444).unwrap(), 1753985275115);
        assert_eq!(timestamp_millis(1700000000.123).unwrap(), 1700000000123);
        assert_eq!(timestamp_millis(-0.0005).unwrap(), -1);
        assert!(timestamp_millis(f64::NAN).is_err());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_millis(0.0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1753985275.1154444).unwrap(),
            "2025-07-31T18:07:55.115Z"
        );
        assert_eq!(
            rfc3339_millis(951782400.5).unwrap(),
            "2000-02-29T00:00:00.500Z"
        );
        assert_eq!(rfc3339_millis(-1.0).unwrap(), "1969-12-31T23:59:59.000Z");
        assert_eq!(
            rfc3339_millis(253402300799.999).unwrap(),
            "9999-12-31T23:59:59.999Z"
        );
        assert!(rfc3339_millis(253402300800.0).is_err());
    }

    #[test]
    fn headers_replaced_in_place() {
        let mut h = vec![
            ("a".into(), "1".into()),
            ("content-type".into(), "x".into()),
            ("b".into(), "2".into()),
            ("CONTENT-TYPE".into(), "y".into()),
        ];
        set_header(&mut h, "Content-Type", "z");
        assert_eq!(
            h,
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("Content-Type".to_owned(), "z".to_owned()),
                ("b".to_owned(), "2".to_owned()),
            ]
        );
        set_header(&mut h, "X-New", "v");
        assert_eq!(h.last().unwrap(), &("X-New".to_owned(), "v".to_owned()));
    }

    #[test]
    fn config_checks() {
        assert!(parse_config("null", &["a"]).unwrap().is_empty());
        assert!(parse_config("[]", &["a"]).is_err());
        let unknown = parse_config(r#"{"b":1}"#, &["a"]).unwrap_err();
        assert_eq!(unknown.pointer, "/b");
        assert!(unknown.to_string().contains("`b`"));
        let m = parse_config(r#"{"a":1}"#, &["a"]).unwrap();
        assert_eq!(config_str(&m, "a").unwrap_err().pointer, "/a");
        assert_eq!(ConfigError::field("a/b~c", "x").pointer, "/a~1b~0c");
        assert_eq!(parse_config("{", &[]).unwrap_err().pointer, "");
    }
}
