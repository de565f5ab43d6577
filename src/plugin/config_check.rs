//! Config checks: a plugin's `validate-config` asked before a config is used (ingest,
//! config saves, operator routes at start) and after a failed `transform`, with its answers
//! cached per plugin version and config text, and the refusal turned into the field the API
//! names.

use super::registry::Plugin;
use super::{PluginError, PluginHost, gate, runtime};
use std::sync::Arc;

/// A config a plugin's `validate-config` refuses: `pointer` (RFC 6901) names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRefused {
    pub pointer: String,
    pub message: String,
}

impl ConfigRefused {
    /// The field as the API names fields: `webhook_transform_config.channels[0]` for the
    /// pointer `/channels/0` under `config_field`.
    pub fn field(&self, config_field: &str) -> String {
        let mut field = config_field.to_owned();
        let tokens: Vec<&str> = match self.pointer.as_str() {
            "" => Vec::new(),
            // A pointer without its leading `/` (an easy slip) names one key, not its tail.
            pointer => match pointer.strip_prefix('/') {
                Some(path) => path.split('/').collect(),
                None => vec![pointer],
            },
        };
        for token in tokens {
            let token = token.replace("~1", "/").replace("~0", "~");
            if token.is_empty() {
                field.push_str("[\"\"]");
            } else if token.bytes().all(|byte| byte.is_ascii_digit()) {
                // An array index, or an object key of digits: RFC 6901 does not tell them
                // apart, and neither can this.
                field.push_str(&format!("[{token}]"));
            } else {
                field.push('.');
                field.push_str(&token);
            }
        }
        field
    }
}

impl std::fmt::Display for ConfigRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pointer.as_str() {
            "" => f.write_str(&self.message),
            pointer => write!(f, "{pointer}: {}", self.message),
        }
    }
}

/// How many `validate-config` answers are kept before the cache starts over.
const VALIDATED_ANSWERS: usize = 4096;

impl PluginHost {
    /// Ask `name`'s `validate-config` whether it accepts `config_json`. Answers are cached
    /// per version and config. A plugin that is not installed, a 0.1.0 plugin, and a call
    /// that fails (trap, timeout) accept: the config is then tried at delivery, where the
    /// failure is recorded.
    pub async fn validate_config(
        &self,
        name: &str,
        config_json: &str,
    ) -> Result<(), ConfigRefused> {
        match self.config_answer(name, config_json, true).await {
            Ok(answer) => answer,
            Err(error) => {
                // Not cached: a timeout on a busy machine or a paused plugin may answer
                // next time.
                tracing::warn!(plugin = %name, %error, "the plugin's validate-config call failed; the config is accepted unchecked");
                Ok(())
            }
        }
    }

    /// `validate_config` for a preview: past the plugin's breaker (see `preview`), and a
    /// call that fails says so instead of accepting.
    pub async fn preview_config(
        &self,
        name: &str,
        config_json: &str,
    ) -> Result<Result<(), ConfigRefused>, PluginError> {
        self.config_answer(name, config_json, false).await
    }

    async fn config_answer(
        &self,
        name: &str,
        config_json: &str,
        through_breaker: bool,
    ) -> Result<Result<(), ConfigRefused>, PluginError> {
        let Some(plugin) = self.registry.get(name) else {
            return Ok(Ok(()));
        };
        let key = format!("{}\n{config_json}", plugin.info.sha256);
        if let Some(answer) = self
            .validated
            .lock()
            .ok()
            .and_then(|answers| answers.get(&key).cloned())
        {
            return Ok(answer);
        }
        let answer = self
            .check_config(&plugin, config_json, through_breaker)
            .await?;
        if let Ok(mut answers) = self.validated.lock() {
            // Configs are few and repeat; a flood of distinct ones only restarts the cache.
            if answers.len() >= VALIDATED_ANSWERS {
                answers.clear();
            }
            answers.insert(key, answer.clone());
        }
        Ok(answer)
    }

    async fn check_config(
        &self,
        plugin: &Arc<Plugin>,
        config_json: &str,
        through_breaker: bool,
    ) -> Result<Result<(), ConfigRefused>, PluginError> {
        let compiled = self.ready(plugin).await?;
        // Through the plugin's gate as a side call: a spinning validate-config counts
        // toward its breaker, a paused plugin is not called, and a good answer does not
        // close a breaker that its transform calls opened. A preview passes by the gate.
        let pass = match through_breaker {
            true => match self
                .gates
                .admit_side(&plugin.info.name, &plugin.info.sha256)
                .await
            {
                gate::Admission::Run(pass) => Some(pass),
                gate::Admission::Paused(left) => return Err(PluginError::Paused(left)),
            },
            false => None,
        };
        let slot = self.slot().await?;
        let checked = runtime::validate_config(&compiled, self.limits, config_json).await;
        drop(slot);
        if let Some(pass) = pass {
            pass.finish(matches!(checked, Err(PluginError::Timeout(_))));
        }
        Ok(match checked? {
            None | Some(Ok(())) => Ok(()),
            Some(Err(refused)) => Err(ConfigRefused {
                pointer: refused.pointer,
                message: refused.message,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ConfigRefused;

    fn field(pointer: &str) -> String {
        ConfigRefused {
            pointer: pointer.into(),
            message: String::new(),
        }
        .field("config")
    }

    #[test]
    fn pointers_name_fields_as_the_api_does() {
        assert_eq!(field(""), "config");
        assert_eq!(field("/prefix"), "config.prefix");
        assert_eq!(field("/fields/0/name"), "config.fields[0].name");
        assert_eq!(field("/in/~1event_type"), "config.in./event_type");
        assert_eq!(field("/a~0b"), "config.a~b");
        assert_eq!(field("/"), "config[\"\"]");
        assert_eq!(field("prefix"), "config.prefix");
        assert_eq!(field("fields/0"), "config.fields/0");
    }
}
