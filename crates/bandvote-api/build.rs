//! Builds the web app (`web/`, Vue + Vite) and embeds its files: `cargo build` alone produces a binary
//! that serves it, with no Node.js needed at run time.
//!
//! `BANDVOTE_WEB_DIST` names an already built `dist/` directory instead (the container image builds
//! the web app in its own stage); otherwise `npm ci` (when `node_modules` is missing or older than
//! the lock file) and `npm run build` run here, writing into `OUT_DIR`.

use std::{
    env,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    println!("cargo:rerun-if-env-changed=BANDVOTE_WEB_DIST");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dist = match env::var_os("BANDVOTE_WEB_DIST") {
        Some(dist) => PathBuf::from(dist),
        None => build_web(&out),
    };
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    assert!(
        files.iter().any(|(path, _)| path == "/index.html"),
        "{} holds no index.html: not a built web app",
        dist.display()
    );
    let mut code = String::from(
        "/// Every file of the built web app: (URL path, contents).\npub static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for (path, file) in &files {
        writeln!(code, "    ({path:?}, include_bytes!({:?})),", file.display().to_string()).expect("write to a string");
    }
    code.push_str("];\n");
    fs::write(out.join("assets.rs"), code).expect("write assets.rs");
}

fn build_web(out: &Path) -> PathBuf {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    for input in [
        "src",
        "public",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
        "tsconfig.app.json",
        "tsconfig.node.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }
    let installed = web.join("node_modules/.package-lock.json");
    let stale = match (fs::metadata(&installed), fs::metadata(web.join("package-lock.json"))) {
        (Ok(installed), Ok(lock)) => installed.modified().ok() < lock.modified().ok(),
        _ => true,
    };
    if stale {
        npm(&web, &["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    }
    let dist = out.join("web");
    let dist_arg = dist.to_str().expect("OUT_DIR is UTF-8");
    npm(&web, &["run", "build", "--", "--outDir", dist_arg, "--emptyOutDir"]);
    dist
}

fn npm(dir: &Path, args: &[&str]) {
    let status = Command::new("npm").args(args).current_dir(dir).status().unwrap_or_else(|e| {
        panic!(
            "the web app is built with npm (Node.js 20), which could not be run: {e}. Install Node.js, or set \
             BANDVOTE_WEB_DIST to an already built web/dist directory"
        )
    });
    assert!(status.success(), "npm {} failed in {}", args.join(" "), dir.display());
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("under the root").to_string_lossy().replace('\\', "/");
            let absolute = fs::canonicalize(&path).expect("an existing file");
            files.push((format!("/{relative}"), absolute));
        }
    }
}
