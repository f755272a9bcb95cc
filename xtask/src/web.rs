//! `cargo xtask web`: build the browser demo, serve it, and run its browser test.
//!
//! The page runs the very component bytes the `carapace` binary embeds (written out
//! with `carapace component`, transpiled by jco's library) under the Rust host core
//! (`web/host`, through wasm-bindgen). Everything it needs is installed here if missing:
//! the npm packages (`npm ci`), `wasm-bindgen-cli` at the version `Cargo.lock` pins
//! (`cargo install --locked`), and, for the test, Debian's `chromium`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo;

const MACHINES: [&str; 2] = ["echo", "kv"];

/// Where Debian's package puts the browser the test drives.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// `cargo xtask web [--serve] [--port N]`.
pub fn command(args: &[String]) -> Result<()> {
    let mut serve_on = None;
    let mut port = 8080;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--serve" => serve_on = Some(()),
            "--port" => {
                let value = args.next().context("`--port` needs a number")?;
                port = value
                    .parse()
                    .with_context(|| format!("`--port {value}` is not a port number"))?;
            }
            other => bail!("unknown option `{other}` (there are: --serve, --port N)"),
        }
    }
    build()?;
    match serve_on {
        Some(()) => serve(port),
        None => Ok(()),
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

fn run(program: &str, args: &[&str], directory: &Path) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(directory)
        .status()
        .with_context(|| format!("running `{program}` (is it installed?)"))?;
    if !status.success() {
        bail!("`{program} {}` failed", args.join(" "));
    }
    Ok(())
}

/// Build `web/dist`: components, their jco transpilation, the host core's wasm-bindgen
/// module.
pub fn build() -> Result<()> {
    let dist = Path::new("web/dist");
    std::fs::create_dir_all(dist.join("components"))?;
    cargo(&["build", "--package", "carapace"])?;
    let carapace = target_dir().join("debug/carapace");
    for machine in MACHINES {
        let output = dist.join(format!("components/{machine}.wasm"));
        let output = output.to_str().context("a path that is not UTF-8")?;
        let carapace = carapace.to_str().context("a path that is not UTF-8")?;
        run(
            carapace,
            &["component", "--machine", machine, "--output", output],
            Path::new("."),
        )?;
    }
    if !Path::new("web/node_modules/.package-lock.json").exists() {
        run("npm", &["ci", "--no-audit", "--no-fund"], Path::new("web"))?;
    }
    run("node", &["tools/transpile.mjs"], Path::new("web"))?;
    cargo(&[
        "build",
        "--package",
        "carapace-web",
        "--target",
        "wasm32-unknown-unknown",
        "--release",
    ])?;
    let bindgen = ensure_wasm_bindgen()?;
    let module = target_dir().join("wasm32-unknown-unknown/release/carapace_web.wasm");
    run(
        &bindgen,
        &[
            "--target",
            "web",
            "--out-dir",
            "web/dist/host",
            module.to_str().context("a path that is not UTF-8")?,
        ],
        Path::new("."),
    )
}

/// The version of `wasm-bindgen` that `Cargo.lock` pins.
fn pinned_wasm_bindgen() -> Result<String> {
    let lock = std::fs::read_to_string("Cargo.lock").context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            let version = lines.next().unwrap_or_default();
            if let Some(version) = version.strip_prefix("version = \"") {
                return Ok(version.trim_end_matches('"').to_string());
            }
        }
    }
    bail!("Cargo.lock pins no wasm-bindgen")
}

/// `wasm-bindgen` at exactly the pinned version, installed with `cargo install
/// --locked` if it is missing or another version.
fn ensure_wasm_bindgen() -> Result<String> {
    let version = pinned_wasm_bindgen()?;
    let installed = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_default();
    if installed != format!("wasm-bindgen {version}") {
        cargo(&[
            "install",
            "--locked",
            "wasm-bindgen-cli",
            "--version",
            &format!("={version}"),
        ])?;
    }
    Ok("wasm-bindgen".into())
}

/// Debian's Chromium, installed with apt if missing.
pub fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0"));
    let (program, prefix): (&str, &[&str]) = if root {
        ("apt-get", &[])
    } else {
        ("sudo", &["apt-get"])
    };
    for args in [
        &["update", "-qq"][..],
        &[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "chromium",
        ][..],
    ] {
        let args: Vec<&str> = prefix.iter().chain(args).copied().collect();
        run(program, &args, Path::new("."))
            .context("installing Debian's `chromium` for the browser test")?;
    }
    Ok(())
}

/// The browser test: `node --test` drives Chromium through the page (it needs
/// `web/dist` built and the `carapace` binary for the native side).
pub fn test() -> Result<()> {
    ensure_chromium()?;
    let carapace = std::fs::canonicalize(target_dir().join("debug/carapace"))?;
    eprintln!("$ node --test test/ (in web/)");
    let status = Command::new("node")
        .args(["--test", "test/"])
        .current_dir("web")
        .env("CARAPACE_BIN", carapace)
        .env("CHROMIUM", CHROMIUM)
        .status()
        .context("running node (is Node.js installed?)")?;
    if !status.success() {
        bail!("the browser test failed");
    }
    Ok(())
}

/// Serve `web/` on 127.0.0.1:`port` until interrupted.
fn serve(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
    println!("serving the carapace page at http://127.0.0.1:{port}/ (Ctrl-C stops)");
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(error) = respond(stream) {
                eprintln!("serving a request: {error:#}");
            }
        });
    }
    Ok(())
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Answer one GET with a file under `web/`; nothing outside it is served.
fn respond(mut stream: TcpStream) -> Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    let relative = if path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_string()
    };
    let file = Path::new("web").join(relative.trim_start_matches('/'));
    let inside = !relative.split('/').any(|part| part == "..");
    match std::fs::read(&file) {
        Ok(body) if inside => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                content_type(&file),
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        _ => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    Ok(())
}
