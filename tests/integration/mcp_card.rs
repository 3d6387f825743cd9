//! The MCP card of the shown-once page: each command, copied from the
//! served HTML, is run through `sh -c` with stand-in `claude`, `codex`,
//! `code` and `npx` programs first on PATH that print what they received,
//! so a URL with `?`, `&` and spaces must arrive as one argument, intact.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp};

/// An MCP URL a shell would take apart if it were pasted unquoted.
const MCP_URL: &str = "https://api.acme.test/mcp?team=a b&env=prod's";

/// Writes stand-ins for the MCP clients into `dir`: each prints its name,
/// then every argument on a line of its own, then the variables that carry
/// tokens.
fn stand_ins(dir: &Path) {
    let script = r#"#!/bin/sh
echo "program:$(basename "$0")"
for a in "$@"; do printf 'arg:%s\n' "$a"; done
echo "env:KEYSMITH_TOKEN=${KEYSMITH_TOKEN-unset}"
echo "env:KEYSMITH_AUTH_HEADER=${KEYSMITH_AUTH_HEADER-unset}"
"#;
    for name in ["claude", "codex", "code", "npx"] {
        let path = dir.join(name);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// What a stand-in printed: (program, arguments, token variables).
#[derive(Debug, PartialEq)]
struct Ran {
    program: String,
    args: Vec<String>,
    token_var: String,
    header_var: String,
}

/// Runs `command` as a person pasting it into a shell would.
fn run_in_shell(fake_bin: &Path, command: &str) -> Ran {
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-c", command])
        .env("PATH", path)
        .env_remove("KEYSMITH_TOKEN")
        .env_remove("KEYSMITH_AUTH_HEADER")
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{command}\nfailed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut ran = Ran {
        program: String::new(),
        args: Vec::new(),
        token_var: String::new(),
        header_var: String::new(),
    };
    for line in stdout.lines() {
        if let Some(p) = line.strip_prefix("program:") {
            assert!(ran.program.is_empty(), "one program only:\n{stdout}");
            ran.program = p.into();
        } else if let Some(a) = line.strip_prefix("arg:") {
            ran.args.push(a.into());
        } else if let Some(v) = line.strip_prefix("env:KEYSMITH_TOKEN=") {
            ran.token_var = v.into();
        } else if let Some(v) = line.strip_prefix("env:KEYSMITH_AUTH_HEADER=") {
            ran.header_var = v.into();
        }
    }
    ran
}

/// Undoes Askama's HTML escaping.
fn unescape(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').map(|e| at + e).expect("entity end");
        let entity = &rest[at + 1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with("#x") => {
                char::from_u32(u32::from_str_radix(&e[2..], 16).unwrap()).unwrap()
            }
            e if e.starts_with('#') => char::from_u32(e[1..].parse().unwrap()).unwrap(),
            e => panic!("unknown entity &{e};"),
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The text of `<code id="{id}">` in the page, as the Copy button copies it.
fn code_block(html: &str, id: &str) -> String {
    let marker = format!("<code id=\"{id}\">");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {marker}")) + marker.len();
    let end = start + html[start..].find("</code>").unwrap();
    unescape(&html[start..end])
}

fn plaintext_in(html: &str) -> String {
    let marker = "id=\"token-plaintext\" class=\"token-plaintext\" type=\"text\" readonly value=\"";
    let start = html.find(marker).expect("plaintext field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn every_mcp_command_survives_a_shell_with_its_arguments_intact() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("KEYSMITH_MCP_URL", MCP_URL)]).await;
    app.signed_in_superuser("ada@example.com").await;
    // The URL as configured, normalized (the space becomes %20): the
    // argument every client must receive.
    let url = app.state.config.mcp_url.as_ref().unwrap().to_string();
    assert!(url.contains('?') && url.contains('&'), "{url}");

    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let r = app
        .client
        .post(app.url("/settings/api-tokens"))
        .form(&[
            ("label", "agent"),
            ("scopes", "read"),
            ("expiry", "never"),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let html = r.text().await.unwrap();
    let token = plaintext_in(&html);
    let bin = tempfile::tempdir().unwrap();
    stand_ins(bin.path());
    let header = format!("Authorization: Bearer {token}");

    // Claude Code: the URL and the header are one argument each.
    let ran = run_in_shell(bin.path(), &code_block(&html, "cmd-claude"));
    assert_eq!(ran.program, "claude");
    assert_eq!(
        ran.args,
        [
            "mcp",
            "add",
            "--transport",
            "http",
            "keysmith",
            &url,
            "--header",
            &header
        ]
    );

    // Codex reads the token from the environment; the command only names it.
    let codex = code_block(&html, "cmd-codex");
    let ran = run_in_shell(bin.path(), &codex);
    assert_eq!(ran.program, "codex");
    assert_eq!(
        ran.args,
        [
            "mcp",
            "add",
            "keysmith",
            "--url",
            &url,
            "--bearer-token-env-var",
            "KEYSMITH_TOKEN"
        ]
    );
    assert_eq!(ran.token_var, token, "the token is in the variable");
    assert!(!codex.lines().last().unwrap().contains(&token));

    // VS Code: the JSON is one argument and parses to the server entry.
    let ran = run_in_shell(bin.path(), &code_block(&html, "cmd-vscode"));
    assert_eq!(ran.program, "code");
    assert_eq!(ran.args.len(), 2, "{:?}", ran.args);
    assert_eq!(ran.args[0], "--add-mcp");
    let entry: Value = serde_json::from_str(&ran.args[1]).unwrap();
    assert_eq!(
        entry,
        json!({ "name": "keysmith", "type": "http", "url": url,
                "headers": { "Authorization": format!("Bearer {token}") } })
    );

    // Claude Desktop: a local command (npx mcp-remote) whose header value
    // comes from `env`, with no space in the argument.
    let desktop: Value = serde_json::from_str(&code_block(&html, "cmd-desktop")).unwrap();
    let server = &desktop["mcpServers"]["keysmith"];
    assert_eq!(server["command"], "npx");
    assert_eq!(
        server["args"],
        json!([
            "-y",
            "mcp-remote",
            url,
            "--header",
            "Authorization:${KEYSMITH_AUTH_HEADER}"
        ])
    );
    assert_eq!(
        server["env"],
        json!({ "KEYSMITH_AUTH_HEADER": format!("Bearer {token}") })
    );
    assert!(
        server["args"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| !a.as_str().unwrap().contains(' ')),
        "Claude Desktop on Windows splits arguments at spaces"
    );
    // Its terminal twin gives npx the same arguments and variable.
    let ran = run_in_shell(bin.path(), &code_block(&html, "cmd-desktop-try"));
    assert_eq!(ran.program, "npx");
    assert_eq!(
        ran.args,
        server["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(ran.header_var, format!("Bearer {token}"));

    // The JSON tab is the generic config with the header.
    let generic: Value = serde_json::from_str(&code_block(&html, "cmd-json")).unwrap();
    assert_eq!(generic["mcpServers"]["keysmith"]["url"], url);

    // Each command box can be scrolled by keyboard: a labelled focusable region.
    for id in [
        "cmd-claude",
        "cmd-desktop",
        "cmd-desktop-try",
        "cmd-codex",
        "cmd-vscode",
        "cmd-json",
    ] {
        let before = &html[..html.find(&format!("<code id=\"{id}\">")).unwrap()];
        let pre = &before[before.rfind("<pre").unwrap()..];
        assert!(
            pre.contains("tabindex=\"0\"")
                && pre.contains("role=\"region\"")
                && pre.contains("aria-label=\""),
            "{id}: {pre}"
        );
    }
    app.shutdown().await;
}
