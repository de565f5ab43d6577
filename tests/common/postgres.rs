//! The suite's PostgreSQL switch: one fresh database per test binary, one fresh schema per
//! gateway, both named at random so runs and binaries never share state.

use tokio::sync::OnceCell;

/// The server the suite uses when `HOOKGATE_TEST_STORE=postgres`, and the
/// PostgreSQL-only tests always.
pub fn server_url() -> String {
    std::env::var("HOOKGATE_TEST_PG").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

/// True when the suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("HOOKGATE_TEST_STORE").is_ok_and(|store| store == "postgres")
}

static DATABASE: OnceCell<String> = OnceCell::const_new();

/// This test binary's database, created on first use.
async fn database() -> &'static str {
    DATABASE
        .get_or_init(|| async {
            let name = format!("hookgate_test_{}", uuid::Uuid::new_v4().simple());
            admin(&format!("CREATE DATABASE {name}")).await;
            name
        })
        .await
}

/// The store URL for a new gateway: `None` (SQLite in its data folder) unless the suite
/// runs on PostgreSQL, then a fresh schema in this binary's database.
pub async fn test_store() -> Option<String> {
    if !on_postgres() {
        return None;
    }
    Some(schema_url(&format!("app_{}", uuid::Uuid::new_v4().simple())).await)
}

/// This binary's test database, its schemas chosen by whoever connects.
pub async fn database_url() -> String {
    format!("{}/{}", server_url(), database().await)
}

/// The URL of `schema` in this binary's test database; the gateway creates the schema.
pub async fn schema_url(schema: &str) -> String {
    format!(
        "{}/{}?options=-c%20search_path%3D{schema}",
        server_url(),
        database().await
    )
}

/// Run `sql` as the server's administrator, on a connection of its own.
pub async fn admin(sql: &str) {
    let (client, connection) =
        tokio_postgres::connect(&format!("{}/postgres", server_url()), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL for the test suite is reachable (HOOKGATE_TEST_PG)");
    let connection = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    drop(client);
    let _ = connection.await;
}
