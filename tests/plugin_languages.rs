//! Plugins in JavaScript and Python, from nothing to a delivered event, as a new author would
//! go: `hookgate plugin new NAME --lang js|python` writes the example of `plugins/examples`,
//! its `build.sh` installs the pinned tool (componentize-js from npm, componentize-py from
//! PyPI) and builds NAME.wasm, and the real gateway delivers through it to a real receiver,
//! refusing a config the plugin refuses.
//!
//! The tools are kept between runs under `target/plugin-languages`, so only the first run
//! downloads them.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The large components take seconds to compile on first load.
const WAIT: Duration = Duration::from_secs(120);

/// Write a project with `plugin new` and build it, keeping the installed tools of earlier
/// runs; returns the built component.
fn new_and_build(name: &str, lang: &str) -> Vec<u8> {
    let generated = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["plugin", "new", name, "--lang", lang, "--dir"])
        .arg(generated.path())
        .output()
        .expect("hookgate runs");
    assert!(output.status.success(), "{output:?}");
    // The project as written, over the last run's copy: its node_modules or .venv stay.
    let project: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/plugin-languages")
        .join(lang);
    copy_tree(generated.path(), &project);
    let output = clean_command(project.join("build.sh"))
        .output()
        .expect("build.sh runs");
    assert!(
        output.status.success(),
        "{lang} build failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(project.join(format!("{name}.wasm"))).expect("build.sh wrote the component")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

async fn delivers_through(name: &str, lang: &str) {
    let built = new_and_build(name, lang);
    let mut plugins = PathBuf::new();
    let app = spawn_app_with(|config| {
        plugins = config.data_dir.join("plugins");
        config.plugins_dir = Some(plugins.clone());
        // A cache of its own, so the component is compiled here and not found compiled.
        config.plugins.cache_dir = None;
    })
    .await;
    let receiver = Receiver::start().await;
    // Copied in while the gateway runs, as an author would: until it is compiled an event
    // naming it is refused, saying why, and the listing shows it loading.
    install_plugin_bytes(&plugins, name, &built);
    let refused = format!(
        "webhook_configurations[0].webhook_transform: no transform plugin named {name:?} is \
         installed: its file is being compiled, and it serves in a few seconds"
    );
    let deadline = std::time::Instant::now() + WAIT;
    let mut saw_loading = false;
    loop {
        let (status, body) = app
            .post(
                "/api/v1/events",
                &event_to(
                    "parse.success",
                    json!({"webhook_url": receiver.url("/early"), "webhook_transform": name}),
                ),
            )
            .await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 422, "{body}");
        if body["detail"] == refused.as_str() {
            let (_, listed) = app.get("/api/v1/plugins").await;
            saw_loading |= listed["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .any(|row| row["name"] == name && row["loading"] == true);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never served: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_loading,
        "{lang}: a 422 said it was compiling and the listing showed it loading"
    );
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/hook"), "webhook_transform": name,
                   "webhook_transform_config": {"header": "X-Team", "value": "docs"},
                   "webhook_signing_secret": "s3cr3t"}),
        ))
        .await;
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    assert_eq!(
        delivery["attempts"].as_array().map(Vec::len),
        Some(1),
        "{delivery:#}"
    );
    let request = receiver
        .received()
        .into_iter()
        .find(|request| request.path == "/hook")
        .expect("the delivery reached the receiver");
    assert_eq!(request.header("x-team").as_deref(), Some("docs"), "{lang}");
    assert!(
        request.header("lc-signature").is_some(),
        "signed after the plugin"
    );

    let (status, body) = app
        .post(
            "/api/v1/events",
            &event_to(
                "parse.success",
                json!({"webhook_url": receiver.url("/hook"), "webhook_transform": name,
                       "webhook_transform_config": {"hedaer": "X-Team"}}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["detail"],
        format!(
            "webhook_configurations[0].webhook_transform_config.hedaer: is refused by plugin \
             {name}: is not a field (header, value)"
        ),
        "{lang}"
    );
    let (_, listed) = app.get("/api/v1/plugins").await;
    let row: &Value = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == name)
        .expect("listed");
    assert_eq!(row["contract"], "0.2.0", "{row:#}");
    assert_eq!(row["about"]["name"], name, "{row:#}");
    assert_eq!(
        row["trapping_imports"],
        json!([]),
        "{lang} builds link no WASI: {row:#}"
    );
}

#[tokio::test]
async fn a_javascript_plugin_from_plugin_new_delivers() {
    delivers_through("js_hook", "js").await;
}

#[tokio::test]
async fn a_python_plugin_from_plugin_new_delivers() {
    delivers_through("py_hook", "python").await;
}
