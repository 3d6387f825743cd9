//! `deploy/nginx.conf` with nginx's `auth_request` (Keysmith answers 403
//! instead of 429 for it: `KEYSMITH_VERIFY_429_AS_403`).

use std::process::Command;

use super::{Ports, Proxy, executable, recipe};

/// nginx in the foreground on `deploy/nginx.conf`, its pid file and error
/// log (stderr) in a temporary directory.
pub async fn start(ports: Ports) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        recipe(
            "nginx.conf",
            ports,
            &["127.0.0.1:8000", "127.0.0.1:3000", "127.0.0.1:8080"],
        ),
    )
    .unwrap();
    let mut command = Command::new(executable("nginx"));
    command
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .args(["-e", "stderr", "-g"])
        .arg(format!(
            "daemon off; pid {};",
            dir.path().join("nginx.pid").display()
        ));
    Proxy::start("nginx", command, ports.proxy, dir).await
}

crate::proxy_tests!(Nginx);
