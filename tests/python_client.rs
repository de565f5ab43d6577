//! Compatibility with LlamaCloud's official Python client (SPEC 7): the gateway on port 0,
//! driven by `tests/python/llama_cloud_compat.py` through `llama-cloud==2.19.0`. The client
//! is installed on first use into a folder under `target/` (PyPI must be reachable then), so
//! `cargo test` needs nothing installed beforehand.

mod common;

use common::*;
use std::path::PathBuf;
use std::time::Duration;

const PIP_COMMAND: &str = "pip install llama-cloud==2.19.0";
/// The script's exit status when the client package is missing or another version.
const MISSING_CLIENT: i32 = 2;

#[tokio::test]
async fn official_python_client_drives_the_webhook_config_api() {
    let app = spawn_app().await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/python/llama_cloud_compat.py");
    let base_url = app.url("");
    let python_deps = install_client();
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&base_url)
        .arg(API_KEY)
        .current_dir(&root)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONPATH", &python_deps)
        .env_remove("LLAMA_CLOUD_BASE_URL")
        .env_remove("LLAMA_CLOUD_CUSTOM_HEADERS")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the Python client script finishes within 120 s")
        .unwrap_or_else(|error| {
            panic!("cannot run python3 ({error}); it needs Python 3 and `{PIP_COMMAND}`")
        });
    let text = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.code() == Some(MISSING_CLIENT) {
        panic!(
            "the llama-cloud Python client is not usable; install it with `{PIP_COMMAND}`\n{text}"
        );
    }
    assert!(
        output.status.success(),
        "llama_cloud_compat.py failed ({}):\n{text}",
        output.status
    );
    assert!(
        text.contains("llama-cloud compatibility: all checks passed"),
        "the script did not finish its checks:\n{text}"
    );
    println!("{text}");
}

/// The folder holding `llama-cloud==2.19.0`, pip-installed there on first use.
fn install_client() -> PathBuf {
    let deps = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-deps");
    let marker = deps.join("llama_cloud-2.19.0.dist-info");
    if marker.exists() {
        return deps;
    }
    let status = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--upgrade",
            "--target",
        ])
        .arg(&deps)
        .arg("llama-cloud==2.19.0")
        .status()
        .unwrap_or_else(|error| panic!("cannot run pip ({error}); `{PIP_COMMAND}` by hand"));
    assert!(
        status.success(),
        "installing the client failed ({status}); try `{PIP_COMMAND}`"
    );
    assert!(
        marker.exists(),
        "pip did not install llama-cloud 2.19.0 into {}",
        deps.display()
    );
    deps
}
