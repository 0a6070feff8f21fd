//! Keeps the README true: every ```sh/```bash block that uses `curl` or `corekv` runs, line by
//! line and in order, against a fresh server, each command must exit 0, and the output shown
//! after `→` (a `#   → ...` line under a command) must be in that command's output.
//!
//! The README says `localhost:7878`; the test substitutes its own server's address, and sets
//! `COREKV_ADDR` for the client. Lines that build or start a server (`cargo ...`,
//! `corekv serve ...`) are not run: the test's own server stands in for them. Commands run in
//! a scratch directory, with the built `corekv` first on `PATH`.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

/// One command of a README block and the outputs shown under it.
struct Step {
    line: String,
    expected: Vec<String>,
}

/// The runnable steps of the README's shell blocks that use curl or corekv, in order.
fn steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        let fence = line.trim_start();
        match &mut block {
            None if fence == "```sh" || fence == "```bash" => block = Some(Vec::new()),
            None => {}
            Some(lines) if fence == "```" => {
                if lines.iter().any(|l| l.contains("curl") || l.contains("corekv")) {
                    steps.extend(block_steps(lines));
                }
                block = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    steps
}

fn block_steps(lines: &[&str]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in lines {
        let text = line.trim();
        if let Some(shown) = text.strip_prefix('#').map(str::trim).and_then(|t| t.strip_prefix('→')) {
            let step = steps.last_mut().expect("a `→` output follows a command");
            step.expected.push(shown.trim().to_string());
        } else if text.is_empty() || text.starts_with('#') || starts_a_server(text) {
            continue;
        } else {
            steps.push(Step {
                line: text.to_string(),
                expected: Vec::new(),
            });
        }
    }
    steps
}

fn starts_a_server(line: &str) -> bool {
    line.starts_with("cargo ") || line.starts_with("corekv serve") || line.starts_with("target/release/corekv serve")
}

#[test]
fn every_readme_command_runs_in_order_and_shows_what_the_readme_says() {
    // Goal: a new user pasting the README's commands top to bottom gets what it promises.
    assert!(common::have_curl(), "the README test needs curl (apt-get install curl)");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() > 30, "only {} README commands found", steps.len());
    assert!(
        steps.iter().any(|s| s.line.starts_with("corekv ")),
        "no CLI command found"
    );
    let server = Server::start(&["--key-index"]);
    let addr = server.addr.to_string();
    let scratch = std::env::temp_dir().join(format!("corekv-readme-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let bin_dir = Path::new(common::binary()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    for step in &steps {
        let line = step.line.replace("localhost:7878", &addr);
        let output = Command::new("bash")
            .args(["-o", "pipefail", "-c", &line])
            .current_dir(&scratch)
            .env("PATH", &path)
            .env("COREKV_ADDR", &addr)
            .env_remove("COREKV_TOKEN")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "`{line}` exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
            output.status.code()
        );
        for expected in &step.expected {
            assert!(
                stdout.contains(expected.as_str()),
                "`{line}` should show `{expected}`; it printed: {stdout}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn the_extractor_finds_commands_outputs_and_skips_server_starts() {
    // Goal: the README test cannot pass vacuously: it sees commands, outputs and skips only starts.
    let text = "```sh\ncargo install --path .\ncorekv serve --x\ncurl a  # note\n#   → out\n```\n```text\ncurl no\n```\n```sh\nls\n```\n";
    let steps = steps(text);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].line, "curl a  # note");
    assert_eq!(steps[0].expected, ["out"]);
}
