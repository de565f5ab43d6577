//! The plugins workspace's own unit tests (config parsing, Slack's limits, CloudEvents
//! modes, filter conditions, the shared helpers), run natively as part of the suite: the
//! plugins are a separate workspace, so the root `cargo test` would not reach them.

mod common;

use std::path::Path;

#[test]
fn the_plugins_unit_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = common::clean_command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root.join("plugins"))
        .args(["test", "--locked", "--workspace", "--target-dir"])
        .arg(root.join("target").join("plugins-native"))
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let passed: usize = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(passed >= 40, "the plugins' unit tests ran: {stdout}");
}
