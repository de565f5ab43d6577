//! Python tools the tests drive (official client libraries from PyPI): a virtual
//! environment per set of pinned packages under `target/python-tools`, made on first use and
//! kept between runs.

use super::clean_command;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Tests in one binary may ask for the same environment at once.
static MAKING: Mutex<()> = Mutex::new(());

/// The interpreter of an environment holding exactly `packages` (`name==version`).
pub fn python_with(packages: &[&str]) -> PathBuf {
    let _making = MAKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let name = packages.join("+").replace(['=', '.'], "_");
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/python-tools")
        .join(name);
    let python = venv.join("bin/python");
    let ready = venv.join("installed");
    if !ready.exists() {
        let made = clean_command("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let installed = clean_command(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages)
            .status()
            .expect("pip runs");
        assert!(installed.success(), "pip install {packages:?} failed");
        std::fs::write(&ready, packages.join("\n")).unwrap();
    }
    python
}
