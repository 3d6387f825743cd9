//! `deploy/traefik.yml` (static) and `deploy/traefik-dynamic.yml` (file
//! provider) with Traefik's ForwardAuth.

use std::process::Command;

use super::{Ports, Proxy, executable, recipe};

/// Traefik started in a temporary directory holding both files (the static
/// one names the dynamic one by a relative path).
pub async fn start(ports: Ports) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("traefik.yml"),
        recipe("traefik.yml", ports, &["127.0.0.1:8000"]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("traefik-dynamic.yml"),
        recipe(
            "traefik-dynamic.yml",
            ports,
            &["127.0.0.1:3000", "127.0.0.1:8080"],
        ),
    )
    .unwrap();
    let mut command = Command::new(executable("traefik"));
    command
        .arg("--configFile=traefik.yml")
        .current_dir(dir.path());
    Proxy::start("traefik", command, ports.proxy, dir).await
}

crate::proxy_tests!(Traefik);
