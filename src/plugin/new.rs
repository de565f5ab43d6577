//! `hookgate plugin new`: write a plugin project in Rust, JavaScript or Python from the
//! examples in `plugins/examples`, which the suite builds and delivers through, so a new
//! author starts from code known to work with this gateway.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// The languages a project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

/// The example's names, replaced by the new plugin's: its package name, and its file stem
/// (the name destinations use in `webhook_transform`).
const EXAMPLE_PACKAGE: &str = "my-plugin";
const EXAMPLE_STEM: &str = "my_plugin";

const CONTRACT: &str = include_str!("../../wit/transformer.wit");

/// Each language's files: (path in the project, contents).
fn template(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            (
                "Cargo.toml",
                include_str!("../../plugins/examples/rust/Cargo.toml"),
            ),
            (
                "Cargo.lock",
                include_str!("../../plugins/examples/rust/Cargo.lock"),
            ),
            (
                ".cargo/config.toml",
                include_str!("../../plugins/examples/rust/.cargo/config.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("../../plugins/examples/rust/src/lib.rs"),
            ),
            (
                "build.sh",
                include_str!("../../plugins/examples/rust/build.sh"),
            ),
            (
                "README.md",
                include_str!("../../plugins/examples/rust/README.md"),
            ),
            (
                "event.json",
                include_str!("../../plugins/examples/event.json"),
            ),
            (
                ".gitignore",
                include_str!("../../plugins/examples/rust/.gitignore"),
            ),
            ("wit/transformer.wit", CONTRACT),
        ],
        Lang::Js => &[
            (
                "package.json",
                include_str!("../../plugins/examples/js/package.json"),
            ),
            (
                "package-lock.json",
                include_str!("../../plugins/examples/js/package-lock.json"),
            ),
            (
                "src/plugin.js",
                include_str!("../../plugins/examples/js/src/plugin.js"),
            ),
            (
                "build.sh",
                include_str!("../../plugins/examples/js/build.sh"),
            ),
            (
                "README.md",
                include_str!("../../plugins/examples/js/README.md"),
            ),
            (
                "event.json",
                include_str!("../../plugins/examples/event.json"),
            ),
            (
                ".gitignore",
                include_str!("../../plugins/examples/js/.gitignore"),
            ),
            ("wit/transformer.wit", CONTRACT),
        ],
        Lang::Python => &[
            (
                "requirements.txt",
                include_str!("../../plugins/examples/python/requirements.txt"),
            ),
            (
                "src/plugin.py",
                include_str!("../../plugins/examples/python/src/plugin.py"),
            ),
            (
                "build.sh",
                include_str!("../../plugins/examples/python/build.sh"),
            ),
            (
                "README.md",
                include_str!("../../plugins/examples/python/README.md"),
            ),
            (
                "event.json",
                include_str!("../../plugins/examples/event.json"),
            ),
            (
                ".gitignore",
                include_str!("../../plugins/examples/python/.gitignore"),
            ),
            ("wit/transformer.wit", CONTRACT),
        ],
    }
}

/// Write a new project for the plugin `name` into `dir` (which must not exist, or be empty).
pub fn new(name: &str, lang: Lang, dir: &Path) -> Result<()> {
    check_name(name)?;
    if lang == Lang::Rust {
        check_crate_name(name)?;
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let package = name.replace('_', "-");
    for (path, contents) in template(lang) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let contents = contents
            .replace(EXAMPLE_PACKAGE, &package)
            .replace(EXAMPLE_STEM, name);
        std::fs::write(&target, contents)
            .with_context(|| format!("writing {}", target.display()))?;
        if path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    println!("wrote {} ({lang:?}); build it with:", dir.display());
    println!("  cd {} && ./build.sh", dir.display());
    println!("then install it: cp {name}.wasm <data>/plugins/   # the plugin \"{name}\"");
    Ok(())
}

/// A plugin is named by its file stem, and destinations name it in JSON: keep it plain.
fn check_name(name: &str) -> Result<()> {
    let plain = name.len() <= 64
        && name.starts_with(|first: char| first.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        bail!(
            "{name:?} is not a plugin name: use lower-case letters, digits and `_`, starting \
             with a letter (it becomes the file name, {name}.wasm, and what destinations put \
             in webhook_transform)"
        );
    }
    Ok(())
}

/// Names cargo refuses for a package, or that would collide with the project's own
/// dependencies in its lock file.
fn check_crate_name(name: &str) -> Result<()> {
    const RESERVED: &[&str] = &[
        "test",
        "std",
        "core",
        "alloc",
        "proc_macro",
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "try",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "yield",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "macro",
        "override",
        "priv",
        "typeof",
        "unsized",
        "virtual",
    ];
    let lock = include_str!("../../plugins/examples/rust/Cargo.lock");
    let dependency = lock
        .lines()
        .filter_map(|line| line.strip_prefix("name = \""))
        .filter_map(|rest| rest.strip_suffix('"'))
        .any(|dependency| dependency != EXAMPLE_PACKAGE && dependency.replace('-', "_") == name);
    if RESERVED.contains(&name) || dependency {
        bail!(
            "{name:?} cannot name a Rust plugin: cargo reserves it or the project depends on a \
             crate of that name; choose another"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_plain_and_not_taken() {
        assert!(check_name("my_hook2").is_ok());
        for bad in [
            "",
            "My_hook",
            "my-hook",
            "1hook",
            "hook.js",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_crate_name("my_hook").is_ok());
        for taken in ["test", "fn", "serde_json", "wit_bindgen", "itoa"] {
            assert!(check_crate_name(taken).is_err(), "{taken}");
        }
    }
}
