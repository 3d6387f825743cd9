//! `deploy/Caddyfile` with Caddy's `forward_auth`.

use std::process::Command;

use super::{Ports, Proxy, executable, recipe};

/// `caddy run` on `deploy/Caddyfile`, with its home and XDG directories
/// (autosave, storage) in a temporary directory.
pub async fn start(ports: Ports) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("Caddyfile");
    std::fs::write(
        &conf,
        recipe(
            "Caddyfile",
            ports,
            &["127.0.0.1:8000", "127.0.0.1:3000", "127.0.0.1:8080"],
        ),
    )
    .unwrap();
    let mut command = Command::new(executable("caddy"));
    command
        .arg("run")
        .arg("--config")
        .arg(&conf)
        .args(["--adapter", "caddyfile"])
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_DATA_HOME", dir.path().join("data"));
    Proxy::start("caddy", command, ports.proxy, dir).await
}

crate::proxy_tests!(Caddy);
