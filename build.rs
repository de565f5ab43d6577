//! Builds the transform plugins in `plugins/` for `wasm32-wasip2` and embeds the bundled
//! ones in the binary, so `cargo build --release` yields one self-contained `hookgate`.
//!
//! The plugins are their own workspace with their own target folder; the nested cargo runs
//! with a cleaned environment so the outer build's flags and target do not leak into it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins compiled into the binary; the rest of the workspace (plugins/testing) is built
/// for the test suite only.
const BUNDLED: &[&str] = &["inngest", "cloudevents", "slack", "filter"];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    watch_sources(&root.join("plugins"));
    println!("cargo:rerun-if-changed=wit");
    let wasm_dir = build_plugins(&root);
    let mut table = String::from(
        "/// Bundled plugins: (name, component bytes).\npub static BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for name in BUNDLED {
        let built = wasm_dir.join(format!("{name}.wasm"));
        let embedded = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&built, &embedded).unwrap_or_else(|error| {
            panic!(
                "plugin {name} was not built at {}: {error}",
                built.display()
            )
        });
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            embedded.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("bundled_plugins.rs"), table).expect("OUT_DIR is writable");
    // Tests load the misbehaving and versioned plugins of plugins/testing from here.
    println!(
        "cargo:rustc-env=HOOKGATE_BUILT_PLUGINS_DIR={}",
        wasm_dir.display()
    );
}

/// Build output and installed tools under plugins/: a developer's own build of a workspace
/// (`target`), the JavaScript and Python examples' tools, and built components. Watching
/// them would make every build invalidate the next, or watch thousands of files.
const NOT_SOURCES: &[&str] = &["target", "node_modules", ".venv", "__pycache__"];

/// Rebuild when any plugin source changes.
fn watch_sources(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let skipped = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| NOT_SOURCES.contains(&name) || name.ends_with(".wasm"));
        if skipped {
            continue;
        }
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            watch_sources(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// A fresh machine lacks the wasm target; add it through rustup so `cargo build` alone works.
fn ensure_target_installed() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|line| line.trim() == TARGET)
        })
        .unwrap_or(false);
    if !installed {
        let added = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status();
        if !added.is_ok_and(|status| status.success()) {
            println!(
                "cargo:warning=could not run `rustup target add {TARGET}`; install the target by hand"
            );
        }
    }
}

/// Build the plugins workspace and the Rust example (a project of its own, as an author's
/// would be) into one target folder; returns the folder holding the components.
fn build_plugins(root: &Path) -> PathBuf {
    ensure_target_installed();
    let target_dir = root.join("target").join("plugins-wasm");
    for project in [root.join("plugins"), root.join("plugins/examples/rust")] {
        build_workspace(&project, &target_dir);
    }
    target_dir.join(TARGET).join("release")
}

fn build_workspace(project: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .env_clear()
        // The project's .cargo/config.toml (wasm link flags) is found from the working
        // directory.
        .current_dir(project)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--manifest-path",
        ])
        .arg(project.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for kept in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_NET_OFFLINE",
    ] {
        if let Ok(value) = std::env::var(kept) {
            command.env(kept, value);
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("cannot run cargo to build the plugins: {error}"));
    if !status.success() {
        panic!(
            "building the transform plugins in {} failed ({status}); is the target \
             installed? run `rustup target add {TARGET}`",
            project.display()
        );
    }
}
