//! axe-core in the browser tests: injects the engine (npm `axe-core`,
//! installed into `tests/a11y/` by `.ci/run`) into whatever page the browser
//! shows and reports its violations in a form a person can act on.
//!
//! The pages' CSP forbids inline and foreign scripts, but WebDriver's
//! `execute` runs its script as the browser itself, outside the page's CSP:
//! the injection works on every page as served, nothing relaxed for tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::Browser;

/// Where `.ci/run` (`npm ci --prefix tests/a11y`) puts the engine.
pub fn axe_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/a11y/node_modules/axe-core/axe.min.js")
}

fn axe_source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| {
        std::fs::read_to_string(axe_path()).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e} (npm ci --prefix tests/a11y, then touch build.rs)",
                axe_path().display()
            )
        })
    })
}

/// One rule broken on one page, with every element that breaks it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub rule: String,
    pub impact: String,
    pub help: String,
    /// (CSS selector path, axe's failure summary) per element.
    pub nodes: Vec<(String, String)>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  [{}] {} — {}", self.impact, self.rule, self.help)?;
        for (target, summary) in &self.nodes {
            let summary = summary.replace('\n', " ");
            writeln!(f, "      {target}: {summary}")?;
        }
        Ok(())
    }
}

/// Injects axe-core (once per page) and runs every rule axe runs by
/// default (WCAG 2.x A/AA and best practices) on the whole document.
pub async fn run_axe(browser: &Browser) -> Vec<Violation> {
    let loaded = browser.eval("return typeof window.axe === 'object';").await;
    if loaded != true {
        // The source defines `axe` on the global object when run as a
        // function body, as WebDriver runs scripts.
        let script = format!("{}\nreturn typeof window.axe;", axe_source());
        let kind = browser
            .client
            .execute(&script, vec![])
            .await
            .unwrap_or_else(|e| panic!("inject axe-core: {e}"));
        assert_eq!(kind, "object", "axe-core did not load into the page");
    }
    let result = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document, { resultTypes: ['violations'] })\
               .then(r => done({ violations: r.violations.map(v => ({\
                   id: v.id, impact: v.impact, help: v.help,\
                   nodes: v.nodes.map(n => [n.target.join(' '), n.failureSummary || '']) })) }),\
                     e => done({ error: String(e) }));",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("run axe-core: {e}"));
    if let Some(error) = result.get("error") {
        panic!("axe-core failed: {error}");
    }
    parse(&result["violations"])
}

fn parse(violations: &Value) -> Vec<Violation> {
    violations
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Violation {
            rule: v["id"].as_str().unwrap_or_default().into(),
            impact: v["impact"].as_str().unwrap_or("unknown").into(),
            help: v["help"].as_str().unwrap_or_default().into(),
            nodes: v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    (
                        n[0].as_str().unwrap_or_default().into(),
                        n[1].as_str().unwrap_or_default().into(),
                    )
                })
                .collect(),
        })
        .collect()
}

/// Fails with a readable list (rule, impact, selectors, summary) when axe
/// finds any violation on the page as it is now. `state` names it.
pub async fn assert_accessible(browser: &Browser, state: &str) {
    let violations = run_axe(browser).await;
    assert!(
        violations.is_empty(),
        "axe-core: {} violation(s) in {state}:\n{}",
        violations.len(),
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<String>()
    );
}

/// The colour schemes and window sizes every state is checked in.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub dark: bool,
    pub width: u32,
    pub height: u32,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant {
            dark: false,
            width: 1280,
            height: 800,
        },
        Variant {
            dark: true,
            width: 1280,
            height: 800,
        },
        Variant {
            dark: false,
            width: 390,
            height: 844,
        },
        Variant {
            dark: true,
            width: 390,
            height: 844,
        },
    ];

    pub fn name(&self) -> String {
        format!(
            "{}-{}x{}",
            if self.dark { "dark" } else { "light" },
            self.width,
            self.height
        )
    }

    /// Puts the browser in this variant without reloading the page (a
    /// dialog stays open): the colour scheme and the viewport, a phone's
    /// (touch, mobile) at 390 px.
    pub async fn apply(&self, browser: &Browser) {
        browser.prefer_dark(self.dark).await;
        browser
            .cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({
                    "width": self.width,
                    "height": self.height,
                    "deviceScaleFactor": if self.width < 600 { 2 } else { 1 },
                    "mobile": self.width < 600,
                }),
            )
            .await;
        // Let styles and layout settle on the new media before measuring.
        browser
            .eval("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));")
            .await;
    }
}

/// An axe-core check that cannot pass without the browser running a real
/// engine: a page that breaks two rules on purpose, served as a data URL.
pub async fn assert_axe_catches_a_broken_page(browser: &Browser) {
    browser
        .goto("data:text/html,<html><body><img src='x.png'><button></button></body></html>")
        .await;
    let rules: Vec<String> = run_axe(browser).await.into_iter().map(|v| v.rule).collect();
    for rule in [
        "image-alt",
        "button-name",
        "html-has-lang",
        "document-title",
    ] {
        assert!(
            rules.iter().any(|r| r == rule),
            "axe missed {rule}: {rules:?}"
        );
    }
}
