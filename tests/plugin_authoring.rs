//! What a plugin author starts from: the README's Rust plugin is `plugins/examples/rust`,
//! which delivers and checks its config, and `hookgate plugin new --lang rust` writes a
//! project whose `build.sh` builds a component that delivers. (JavaScript and Python:
//! `tests/plugin_languages.rs`.)

mod common;

use common::plugins::*;
use common::*;
use serde_json::json;
use std::path::Path;

#[test]
fn the_readme_rust_plugin_is_the_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("plugins/examples/rust/src/lib.rs")).unwrap();
    let section = readme
        .split_once("### Writing your own")
        .expect("the README has a section for plugin authors")
        .1;
    let snippet = section
        .split_once("```rust\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("the section has a Rust block")
        .0;
    assert_eq!(
        snippet,
        example.trim_end(),
        "README snippet and plugins/examples/rust differ"
    );
}

#[tokio::test]
async fn the_rust_example_delivers_and_checks_its_config() {
    let (app, _) = gateway(&[("my_plugin", "my_plugin")], |_| {}).await;
    let receiver = Receiver::start().await;
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/example"), "webhook_transform": "my_plugin",
                   "webhook_transform_config": {"header": "X-Team", "value": "docs"}}),
        ))
        .await;
    app.wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    let request = &receiver.received()[0];
    assert_eq!(request.header("x-team").as_deref(), Some("docs"));
    // The body is the gateway's, untouched (the default `string` output format).
    assert!(
        String::from_utf8_lossy(&request.body).contains("parse.success"),
        "{request:?}"
    );

    let (status, body) = app
        .post(
            "/api/v1/events",
            &event_to(
                "parse.success",
                json!({"webhook_url": receiver.url("/example"), "webhook_transform": "my_plugin",
                       "webhook_transform_config": {"hedaer": "X-Team"}}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().starts_with(
            "webhook_configurations[0].webhook_transform_config.hedaer: is refused by plugin my_plugin: is not a field"
        ),
        "{body}"
    );
    let row = wait_plugin(&app, "my_plugin", "described", |row| {
        row.is_some_and(|row| !row["about"].is_null())
    })
    .await
    .unwrap();
    assert_eq!(row["about"]["name"], "my_plugin", "{row:#}");
}

/// Run a project's `build.sh` as its author would, in a clean environment, with `extra` set.
fn run_build_script(project: &Path, extra: &[(&str, &Path)]) {
    let mut command = clean_command(project.join("build.sh"));
    for (name, value) in extra {
        command.env(name, value);
    }
    let output = command.output().expect("build.sh runs");
    assert!(
        output.status.success(),
        "{} failed: {}\n{}",
        project.join("build.sh").display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn plugin_new_writes_a_rust_project_that_builds_and_delivers() {
    let temp = tempfile::tempdir().unwrap();
    let project = temp.path().join("demo_hook");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["plugin", "new", "demo_hook", "--lang", "rust", "--dir"])
        .arg(&project)
        .output()
        .expect("hookgate runs");
    let stdout = stdout_of(&output);
    assert!(stdout.contains("./build.sh"), "{stdout}");
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "src/lib.rs",
        "wit/transformer.wit",
        "README.md",
        "event.json",
    ] {
        assert!(project.join(file).is_file(), "{file} written");
    }
    // The same again is refused: the folder is not empty.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["plugin", "new", "demo_hook", "--lang", "rust", "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let bad_name = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["plugin", "new", "Demo-Hook", "--lang", "rust"])
        .current_dir(temp.path())
        .output()
        .unwrap();
    assert!(!bad_name.status.success());
    assert!(String::from_utf8_lossy(&bad_name.stderr).contains("is not a plugin name"));

    // Kept between runs, so only the first run compiles the dependencies.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plugin-new");
    run_build_script(&project, &[("CARGO_TARGET_DIR", &target)]);
    let built =
        std::fs::read(project.join("demo_hook.wasm")).expect("build.sh wrote demo_hook.wasm");

    let (app, dir) = gateway(&[], |_| {}).await;
    install_bytes(&dir, "demo_hook", &built);
    wait_serving(&app, "demo_hook", &sha256_of(&built)).await;
    let receiver = Receiver::start().await;
    let request = deliver_through(&app, &receiver, "demo_hook").await;
    assert_eq!(request.header("x-source").as_deref(), Some("hookgate"));
    let row = wait_plugin(&app, "demo_hook", "described", |row| {
        row.is_some_and(|row| !row["about"].is_null())
    })
    .await
    .unwrap();
    assert_eq!(row["about"]["name"], "demo_hook", "{row:#}");
}
