//! An example hookgate transform plugin: adds one header to every request.
//! Config: `{"header": "X-Source", "value": "hookgate"}` (both optional).

// Generates `Guest`, `export!` and the contract's types: `Event`, `OutgoingRequest`,
// `Outcome`, `ConfigError`, `PluginInfo` here, `Header` in `hookgate::plugin::types`.
wit_bindgen::generate!({ world: "transformer", path: "wit" });

use hookgate::plugin::types::Header;
use serde_json::Value;

struct MyPlugin;

/// The config, read the same way by `validate_config` and `transform`.
fn header(config: &str) -> Result<(String, String), ConfigError> {
    let refuse = |pointer: &str, message: &str| ConfigError {
        pointer: pointer.into(),
        message: message.into(),
    };
    let config: Value = serde_json::from_str(config).map_err(|_| refuse("", "is not JSON"))?;
    let mut header = ("X-Source".to_string(), "hookgate".to_string());
    let Some(fields) = config.as_object() else {
        return match config.is_null() {
            true => Ok(header),
            false => Err(refuse("", "must be an object")),
        };
    };
    for (key, value) in fields {
        // An RFC 6901 pointer: `~` and `/` in a key are escaped.
        let pointer = format!("/{}", key.replace('~', "~0").replace('/', "~1"));
        let text = value
            .as_str()
            .ok_or_else(|| refuse(&pointer, "must be a string"));
        match key.as_str() {
            "header" => header.0 = text?.to_string(),
            "value" => header.1 = text?.to_string(),
            _ => return Err(refuse(&pointer, "is not a field (header, value)")),
        }
    }
    Ok(header)
}

impl Guest for MyPlugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "my_plugin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Adds one header to every request.".into(),
            config_schema: None,
        }
    }

    fn validate_config(config: String) -> Result<(), ConfigError> {
        header(&config).map(drop)
    }

    fn transform(
        _event: Event,
        mut request: OutgoingRequest,
        config: String,
    ) -> Result<Outcome, String> {
        let (name, value) = header(&config).map_err(|error| error.message)?;
        request.headers.push(Header { name, value });
        Ok(Outcome::Send(request))
    }
}

export!(MyPlugin);
