//! The `store` setting: which store a gateway opens.
//!
//! `sqlite:PATH` or `postgres://…` / `postgresql://…`; absent means SQLite in the data
//! folder. Parsed once, at validation, so a mistyped scheme stops the gateway before it
//! binds anything. Error messages name the scheme, never the URL: it may hold a password.

use super::StoreError;
use super::postgres::PgSettings;
use std::path::{Path, PathBuf};

/// The SQLite file a gateway uses when no store is configured, inside its data folder.
pub const DEFAULT_SQLITE_FILE: &str = "hookgate.sqlite3";

#[derive(Debug, Clone)]
pub enum StoreUrl {
    /// A SQLite file. `in_data_dir` is true for the default file, which the data folder's
    /// lock already covers; any other file needs a lock of its own.
    Sqlite {
        path: PathBuf,
        in_data_dir: bool,
    },
    Postgres(Box<PgSettings>),
}

impl StoreUrl {
    /// Parse the `store` setting; `None` is the default SQLite file in `data_dir`.
    pub fn parse(setting: Option<&str>, data_dir: &Path) -> Result<StoreUrl, StoreError> {
        let Some(text) = setting else {
            return Ok(StoreUrl::Sqlite {
                path: data_dir.join(DEFAULT_SQLITE_FILE),
                in_data_dir: true,
            });
        };
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(StoreError::InvalidSetting(
                    "sqlite: needs a file path, as in sqlite:data/hookgate.sqlite3".to_owned(),
                ));
            }
            return Ok(StoreUrl::Sqlite {
                path: PathBuf::from(path),
                in_data_dir: false,
            });
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return PgSettings::parse(text).map(|settings| StoreUrl::Postgres(Box::new(settings)));
        }
        let scheme = match text.split_once(':') {
            Some((scheme, _)) => format!("{scheme:?}"),
            None => "without a scheme".to_owned(),
        };
        Err(StoreError::InvalidSetting(format!(
            "a store {scheme} is not supported: use sqlite:PATH or postgres://USER@HOST:PORT/DB"
        )))
    }
}

impl std::fmt::Display for StoreUrl {
    /// For logs: the SQLite file, or the PostgreSQL server without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite { path, .. } => write!(f, "sqlite:{}", path.display()),
            StoreUrl::Postgres(settings) => f.write_str(&settings.describe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(setting: Option<&str>) -> Result<StoreUrl, StoreError> {
        StoreUrl::parse(setting, Path::new("/var/lib/hookgate"))
    }

    #[test]
    fn absent_is_sqlite_in_the_data_folder() {
        match parse(None).unwrap() {
            StoreUrl::Sqlite { path, in_data_dir } => {
                assert_eq!(path, Path::new("/var/lib/hookgate/hookgate.sqlite3"));
                assert!(in_data_dir);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sqlite_takes_a_path() {
        match parse(Some("sqlite:/tmp/x.db")).unwrap() {
            StoreUrl::Sqlite { path, in_data_dir } => {
                assert_eq!(path, Path::new("/tmp/x.db"));
                assert!(!in_data_dir);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(Some("sqlite:")).is_err());
    }

    #[test]
    fn both_postgres_schemes_are_accepted() {
        for url in [
            "postgres://root@127.0.0.1:5432/test",
            "postgresql://root@localhost/test?options=-c%20search_path%3Dhg",
        ] {
            assert!(
                matches!(parse(Some(url)), Ok(StoreUrl::Postgres(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn other_schemes_are_refused_without_echoing_the_url() {
        let error = parse(Some("mysql://user:hunter2@db/hookgate"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"mysql\""), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let error = parse(Some("hookgate.db")).unwrap_err().to_string();
        assert!(error.contains("without a scheme"), "{error}");
    }
}
