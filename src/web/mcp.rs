//! The MCP card of the shown-once dialog: ready-made setup for each MCP
//! client, built from `KEYSMITH_MCP_URL` and the new token.
//!
//! Every command is meant to be pasted into a POSIX shell, so every
//! argument that comes from configuration or the token goes through
//! `sh_quote`: a URL with `?a=1&b=2` must reach the client as one argument,
//! not start a background job and lose the header. Where a client reads the
//! token from an environment variable (Codex, Claude Desktop through
//! mcp-remote), the token goes there and the command names the variable.

use base64::Engine;

use crate::auth::session::url_encode;
use crate::config::Config;
use crate::token::PlainToken;

/// What the card shows, one entry per client tab.
pub struct McpView {
    pub url: String,
    /// `claude mcp add …` for Claude Code.
    pub claude: String,
    /// The `mcpServers` entry for `claude_desktop_config.json`: Claude
    /// Desktop's file takes local commands only, so `npx mcp-remote` bridges
    /// to the server, the header value coming from `env`.
    pub desktop: String,
    /// The same bridge from a terminal, to try it before editing the file.
    pub desktop_try: String,
    pub codex: String,
    pub vscode: String,
    pub cursor: String,
    pub json: String,
}

/// Quotes `arg` for a POSIX shell the way `shlex.quote` does: words made of
/// safe characters stay as they are (so commands stay readable), anything
/// else goes in single quotes, a single quote inside becoming `'\''`.
pub fn sh_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The variable a client reads the token from: `KEYSMITH_TOKEN` for the
/// default server name (names are letters, digits, `-` and `_`).
fn env_var(name: &str, suffix: &str) -> String {
    format!("{}_{suffix}", name.to_ascii_uppercase().replace('-', "_"))
}

impl McpView {
    pub fn new(config: &Config, token: &PlainToken) -> Option<McpView> {
        let url = config.mcp_url.as_ref()?.to_string();
        let name = config.mcp_name.as_str();
        let secret = token.expose_secret();
        let header = format!("Bearer {secret}");
        let q = sh_quote;

        let claude = format!(
            "claude mcp add --transport http {} {} --header {}",
            q(name),
            q(&url),
            q(&format!("Authorization: {header}"))
        );

        // mcp-remote replaces `${VAR}` in header values from its environment;
        // no space after the colon, because Claude Desktop on Windows splits
        // arguments at spaces.
        let header_var = env_var(name, "AUTH_HEADER");
        let header_arg = format!("Authorization:${{{header_var}}}");
        let desktop_entry = serde_json::json!({ "mcpServers": { name: {
            "command": "npx",
            "args": ["-y", "mcp-remote", url, "--header", header_arg],
            "env": { header_var.as_str(): header },
        } } });
        let desktop_try = format!(
            "export {header_var}={}\nnpx -y mcp-remote {} --header {}",
            q(&header),
            q(&url),
            q(&header_arg)
        );

        let token_var = env_var(name, "TOKEN");
        let codex = format!(
            "export {token_var}={}\ncodex mcp add {} --url {} --bearer-token-env-var {token_var}",
            q(secret),
            q(name),
            q(&url)
        );

        let server = serde_json::json!({ "type": "http", "url": url, "headers": { "Authorization": header } });
        let vscode = serde_json::json!({ "name": name, "type": "http", "url": url, "headers": { "Authorization": header } });
        let cursor_config =
            serde_json::json!({ "url": url, "headers": { "Authorization": header } });
        Some(McpView {
            claude,
            desktop: pretty(&desktop_entry),
            desktop_try,
            codex,
            vscode: format!("code --add-mcp {}", q(&vscode.to_string())),
            cursor: format!(
                "cursor://anysphere.cursor-deeplink/mcp/install?name={}&config={}",
                url_encode(name),
                url_encode(
                    &base64::engine::general_purpose::STANDARD.encode(cursor_config.to_string())
                )
            ),
            json: pretty(&serde_json::json!({ "mcpServers": { name: server } })),
            url,
        })
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::sh_quote;

    #[test]
    fn safe_words_stay_and_everything_else_is_single_quoted() {
        assert_eq!(sh_quote("keysmith"), "keysmith");
        assert_eq!(
            sh_quote("https://api.example.com/mcp"),
            "https://api.example.com/mcp"
        );
        assert_eq!(
            sh_quote("https://x.test/mcp?a=1&b=2"),
            "'https://x.test/mcp?a=1&b=2'"
        );
        assert_eq!(
            sh_quote("Authorization: Bearer t"),
            "'Authorization: Bearer t'"
        );
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote("${HOME}"), "'${HOME}'");
        assert_eq!(sh_quote(""), "''");
    }
}
