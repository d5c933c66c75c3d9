//! Embeds the built web page (`web/dist`) into the binary, so that
//! `cargo run --release` serves it with no Node.js at run time, and the git
//! commit it was built from, for `reeltime --version`.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn main() {
    embed_git_commit();
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dist = manifest.join("../../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    let mut code = String::from(
        "/// Files of `web/dist`, by URL path.\npub static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for (url_path, file) in files {
        let _ = writeln!(
            code,
            "    ({url_path:?}, include_bytes!({:?})),",
            file.display().to_string()
        );
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("web_assets.rs");
    std::fs::write(out, code).expect("write web_assets.rs");
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let url_path = format!("/{}", relative.to_string_lossy().replace('\\', "/"));
            let absolute = path.canonicalize().unwrap_or(path.clone());
            files.push((url_path, absolute));
        }
    }
}

/// Sets `REELTIME_GIT_COMMIT` to the short commit hash, or `unknown`
/// outside a git checkout (a source tarball, a registry). Uncommitted
/// changes are not marked: telling them would mean rebuilding on every edit.
fn embed_git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) if !hash.is_empty() => hash,
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=REELTIME_GIT_COMMIT={commit}");
    // A new commit or a checkout changes HEAD or the ref it points at. Only
    // files that exist: a missing one would make cargo rerun every build.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
