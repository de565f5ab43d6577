//! The connection settings a `postgres://` store URL carries.
//!
//! Everything libpq-style in the URL (`options`, `connect_timeout`, `application_name`, …)
//! goes to tokio-postgres as written; `pool_size` is hookgate's own and is taken out first.
//! TLS is not built in yet, so `sslmode=require` is refused rather than quietly sent in
//! plain text; `prefer` (the default) connects in plain text.

use crate::store::StoreError;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::SslMode;

/// Connections per gateway when the URL does not say `pool_size=N`.
pub const DEFAULT_POOL_SIZE: usize = 16;
const POOL_SIZE_PARAM: &str = "pool_size";
/// A database that does not answer fails startup (and `/readyz`) instead of hanging it.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parsed PostgreSQL settings. Its `Debug` (tokio-postgres's) redacts the password.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub(super) config: tokio_postgres::Config,
    pub(super) pool_size: usize,
}

impl PgSettings {
    pub fn parse(url: &str) -> Result<PgSettings, StoreError> {
        let invalid = |message: String| StoreError::InvalidSetting(message);
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut pool_size = DEFAULT_POOL_SIZE;
        // Split by hand rather than re-encode through a URL library: tokio-postgres decodes
        // percent escapes but not `+`, so a round trip through form encoding would turn
        // `options=-c%20search_path%3Dx` into something else.
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some((POOL_SIZE_PARAM, value)) => {
                    pool_size = value
                        .parse::<usize>()
                        .ok()
                        .filter(|size| *size > 0)
                        .ok_or_else(|| {
                            invalid(format!(
                                "{POOL_SIZE_PARAM}={value:?} is not a positive whole number"
                            ))
                        })?;
                }
                _ => kept.push(pair),
            }
        }
        let url = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|error| invalid(format!("not a valid PostgreSQL URL: {error}")))?;
        match config.get_ssl_mode() {
            SslMode::Disable | SslMode::Prefer => {}
            _ => {
                return Err(invalid(
                    "sslmode: this build has no TLS for PostgreSQL yet; use a trusted network \
                     with sslmode=disable (or prefer), or a local TLS proxy"
                        .to_owned(),
                ));
            }
        }
        if config.get_hosts().is_empty() {
            return Err(invalid(
                "the URL needs a host: postgres://USER@HOST:PORT/DB".to_owned(),
            ));
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err(invalid(
                "the URL needs a user: postgres://USER@HOST:PORT/DB".to_owned(),
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("hookgate");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        Ok(PgSettings { config, pool_size })
    }

    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// `postgres://USER@HOST:PORT/DB` for logs: the password and the options are left out.
    pub fn describe(&self) -> String {
        use tokio_postgres::config::Host;
        // As libpq reads them: one port applies to every host, else one port per host.
        let ports = self.config.get_ports();
        let port_of = |index: usize| match ports {
            [only] => *only,
            _ => ports.get(index).copied().unwrap_or(5432),
        };
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(index, host)| (host, port_of(index)))
            .map(|(host, port)| match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            })
            .collect();
        format!(
            "postgres://{}@{}/{} (pool of {})",
            self.config.get_user().unwrap_or_default(),
            hosts.join(","),
            self.config.get_dbname().unwrap_or_default(),
            self.pool_size,
        )
    }

    /// The `-c name=value` options the URL sets (the search path, for one).
    pub fn options(&self) -> Option<&str> {
        self.config.get_options()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_is_taken_out_and_options_are_kept_verbatim() {
        let settings = PgSettings::parse(
            "postgres://root@127.0.0.1:5432/test?pool_size=4&options=-c%20search_path%3Dhg_x",
        )
        .unwrap();
        assert_eq!(settings.pool_size(), 4);
        assert_eq!(settings.options(), Some("-c search_path=hg_x"));
        assert_eq!(settings.config.get_dbname(), Some("test"));
        assert_eq!(settings.config.get_application_name(), Some("hookgate"));
    }

    #[test]
    fn defaults() {
        let settings = PgSettings::parse("postgresql://root@localhost/db").unwrap();
        assert_eq!(settings.pool_size(), DEFAULT_POOL_SIZE);
        assert_eq!(
            settings.config.get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
    }

    #[test]
    fn tls_requirements_are_refused() {
        let error = PgSettings::parse("postgres://root@db/x?sslmode=require")
            .unwrap_err()
            .to_string();
        assert!(error.contains("sslmode"), "{error}");
        assert!(PgSettings::parse("postgres://root@db/x?sslmode=disable").is_ok());
    }

    #[test]
    fn bad_values_are_refused_without_the_password() {
        for url in [
            "postgres://root:hunter2@db/x?pool_size=0",
            "postgres://root:hunter2@db/x?pool_size=many",
            "postgres://root:hunter2@db/x?no_such_option=1",
            "postgres://:hunter2@db/x",
        ] {
            let error = PgSettings::parse(url).unwrap_err().to_string();
            assert!(!error.contains("hunter2"), "{url}: {error}");
        }
    }

    #[test]
    fn described_without_the_password_or_options() {
        let settings = PgSettings::parse(
            "postgres://root:hunter2@db.internal:6432/queue?pool_size=4&options=-c%20search_path%3Dx",
        )
        .unwrap();
        assert_eq!(
            settings.describe(),
            "postgres://root@db.internal:6432/queue (pool of 4)"
        );
        let settings = PgSettings::parse("postgres://root@a,b:6432/queue").unwrap();
        assert_eq!(
            settings.describe(),
            "postgres://root@a:5432,b:6432/queue (pool of 16)"
        );
    }
}
