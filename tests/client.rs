//! The `corekv` client subcommands, run as the real binary against a real `corekv serve`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use common::Server;

/// Exit codes the client documents in its `--help`.
const EXIT_NOT_FOUND: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_CONNECT: i32 = 3;
const EXIT_TIMEOUT: i32 = 4;
const EXIT_SERVER: i32 = 5;
const EXIT_LOCAL_IO: i32 = 6;

/// The client's environment variables, none of which may leak in from the caller's.
const CLIENT_ENV: [&str; 4] = ["COREKV_ADDR", "COREKV_TIMEOUT_MS", "COREKV_TOKEN", "COREKV_OUTPUT"];

/// A client invocation: the binary with `args`, nothing from the caller's `COREKV_*`.
fn client(args: &[&str]) -> Command {
    let mut command = Command::new(common::binary());
    command.args(args).stdin(Stdio::null());
    for name in CLIENT_ENV {
        command.env_remove(name);
    }
    command
}

/// Runs the client with `stdin` fed to it, and collects everything.
fn run_with_stdin(mut command: Command, stdin: &[u8]) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn the client");
    let mut pipe = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    // Written from a thread so a client that answers before reading all of stdin cannot deadlock us.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("wait for the client");
    writer.join().expect("stdin writer");
    output
}

/// Runs the client against `server` (with `--addr` appended).
fn run_at(server: &Server, args: &[&str]) -> Output {
    let addr = server.addr.to_string();
    client(&[args, &["--addr", &addr]].concat())
        .output()
        .expect("run the client")
}

fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .expect("the client exited rather than being killed by a signal")
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8 output")
}

/// Asserts the client succeeded with empty stderr; returns stdout.
fn success(output: &Output) -> &[u8] {
    assert_eq!(code(output), 0, "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(text(&output.stderr), "", "a success prints nothing on stderr");
    &output.stdout
}

/// Asserts the client failed with `expected` and exactly one `ERROR: ` line on stderr, which it returns.
fn failure(output: &Output, expected: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(code(output), expected, "stderr: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "a panic: {stderr}"
    );
    assert!(
        stderr.starts_with("ERROR: ") && stderr.ends_with('\n'),
        "not an ERROR line: {stderr:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "more than one line: {stderr:?}");
    stderr
}

/// An address nothing listens on: a port the kernel handed out a moment ago, now closed.
fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").to_string()
}

#[test]
fn seed_002_example_sequence_works_as_written() {
    // Goal: seed 002's README examples, word for word (`store`/`read`/`delete --key`), behave as documented.
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let seed = |args: &[&str]| client(args).env("COREKV_ADDR", &addr).output().expect("run the client");

    assert_eq!(success(&seed(&["store", "--key", "mykey", "--value", "myvalue"])), b"");
    assert_eq!(
        success(&seed(&["read", "--key", "mykey"])),
        b"myvalue",
        "stdout is a pipe: no newline"
    );
    assert_eq!(success(&seed(&["store", "--key", "mykey", "--value", "myvalue2"])), b"");
    assert_eq!(success(&seed(&["read", "--key", "mykey"])), b"myvalue2");
    assert_eq!(success(&seed(&["delete", "--key", "mykey"])), b"");
    let missing = seed(&["read", "--key", "mykey"]);
    assert_eq!(failure(&missing, EXIT_NOT_FOUND), "ERROR: no key `mykey` found\n");
    assert_eq!(missing.stdout, b"");
}

#[test]
fn set_and_get_take_positional_arguments_and_any_key() {
    // Goal: `set KEY VALUE` / `get KEY` round-trip, and keys with `/`, spaces and UTF-8 land under exactly that key.
    let server = Server::start(&[]);
    assert_eq!(success(&run_at(&server, &["set", "plain", "v1"])), b"");
    assert_eq!(success(&run_at(&server, &["get", "plain"])), b"v1");

    let key = "a/b c/\u{e9}?x=1#f%";
    assert_eq!(success(&run_at(&server, &["set", key, "odd"])), b"");
    assert_eq!(success(&run_at(&server, &["get", "--key", key])), b"odd");
    let raw = server.request("GET", "/v1/keys/a%2Fb%20c%2F%C3%A9%3Fx%3D1%23f%25", b"");
    assert_eq!(
        (raw.status, raw.body.as_slice()),
        (200, &b"odd"[..]),
        "stored under the decoded key"
    );

    // A value may start with a hyphen.
    assert_eq!(success(&run_at(&server, &["set", "neg", "-5"])), b"");
    assert_eq!(success(&run_at(&server, &["get", "neg"])), b"-5");
}

#[test]
fn values_from_stdin_and_get_output_are_binary_safe() {
    // Goal: `set KEY -` stores stdin's exact bytes, and `get` writes exactly those bytes back.
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let mut value: Vec<u8> = (0..=255u8).collect();
    value.extend_from_slice(b"\r\n\0\n");
    let output = run_with_stdin(client(&["set", "bin", "-", "--addr", &addr]), &value);
    assert_eq!(success(&output), b"");
    assert_eq!(
        server.request("GET", "/v1/keys/bin", b"").body,
        value,
        "the server holds the exact bytes"
    );
    assert_eq!(success(&run_at(&server, &["get", "bin"])), value.as_slice());

    // `--value -` reads stdin too, and an empty stdin is an empty value.
    let output = run_with_stdin(
        client(&["store", "--key", "empty", "--value", "-", "--addr", &addr]),
        b"",
    );
    assert_eq!(success(&output), b"");
    let raw = server.request("GET", "/v1/keys/empty", b"");
    assert_eq!((raw.status, raw.body.len()), (200, 0));
    assert_eq!(success(&run_at(&server, &["get", "empty"])), b"");
}

#[test]
fn update_changes_existing_keys_only() {
    // Goal: `update` of a missing key exits 1 with the ERROR line and creates nothing; of an existing key it replaces.
    let server = Server::start(&[]);
    let output = run_at(&server, &["update", "ghost", "boo"]);
    assert_eq!(failure(&output, EXIT_NOT_FOUND), "ERROR: no key `ghost` found\n");
    assert_eq!(
        server.request("GET", "/v1/keys/ghost", b"").status,
        404,
        "nothing was created"
    );

    assert_eq!(success(&run_at(&server, &["set", "k", "old"])), b"");
    assert_eq!(
        success(&run_at(&server, &["update", "--key", "k", "--value", "new"])),
        b""
    );
    assert_eq!(success(&run_at(&server, &["get", "k"])), b"new");
}

#[test]
fn delete_is_idempotent() {
    // Goal: `delete` exits 0 whether or not the key existed, and the key is gone afterwards.
    let server = Server::start(&[]);
    assert_eq!(success(&run_at(&server, &["set", "k", "v"])), b"");
    assert_eq!(success(&run_at(&server, &["delete", "k"])), b"");
    assert_eq!(success(&run_at(&server, &["delete", "k"])), b"");
    assert_eq!(success(&run_at(&server, &["delete", "never-was"])), b"");
    failure(&run_at(&server, &["get", "k"]), EXIT_NOT_FOUND);
}

/// The `updated` and `missing` lists of a bulk-update answer, sorted.
fn bulk_lists(stdout: &[u8]) -> (Vec<String>, Vec<String>) {
    let answer: serde_json::Value = serde_json::from_slice(stdout).expect("bulk-update prints JSON");
    let list = |name: &str| {
        let mut keys: Vec<String> = answer[name]
            .as_array()
            .unwrap_or_else(|| panic!("no `{name}` array in {answer}"))
            .iter()
            .map(|key| key.as_str().expect("keys are strings").to_string())
            .collect();
        keys.sort();
        keys
    };
    (list("updated"), list("missing"))
}

#[test]
fn bulk_update_reads_a_file_or_stdin_and_reports_missing_keys() {
    // Goal: `bulk-update FILE` and `bulk-update -` send the JSON array; all present → 0, some missing → 1 naming them.
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    for key in ["a", "b"] {
        assert_eq!(success(&run_at(&server, &["set", key, "0"])), b"");
    }

    let dir = std::env::temp_dir().join(format!("corekv-client-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("updates.json");
    std::fs::write(&file, r#"[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]"#).expect("write file");
    let output = run_at(&server, &["bulk-update", file.to_str().expect("UTF-8 temp path")]);
    assert_eq!(bulk_lists(success(&output)), (vec!["a".into(), "b".into()], vec![]));
    assert_eq!(success(&run_at(&server, &["get", "b"])), b"2");

    let body = br#"[{"key": "a", "value": "3"}, {"key": "nope", "value": "x"}]"#;
    let output = run_with_stdin(client(&["bulk-update", "-", "--addr", &addr]), body);
    let stderr = failure(&output, EXIT_NOT_FOUND);
    assert_eq!(stderr, "ERROR: no key `nope` found\n");
    assert_eq!(bulk_lists(&output.stdout), (vec!["a".into()], vec!["nope".into()]));
    assert_eq!(success(&run_at(&server, &["get", "a"])), b"3");
    assert_eq!(
        server.request("GET", "/v1/keys/nope", b"").status,
        404,
        "bulk-update creates nothing"
    );

    // Not an array: refused before anything is sent.
    std::fs::write(&file, r#"{"key": "a", "value": "4"}"#).expect("write file");
    failure(
        &run_at(&server, &["bulk-update", file.to_str().expect("UTF-8 temp path")]),
        EXIT_USAGE,
    );
    let absent = dir.join("absent.json");
    failure(
        &run_at(&server, &["bulk-update", absent.to_str().expect("UTF-8 temp path")]),
        EXIT_LOCAL_IO,
    );
    assert_eq!(success(&run_at(&server, &["get", "a"])), b"3");
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}

#[test]
fn ping_prints_pong() {
    // Goal: `ping` against a live server prints `pong` and exits 0.
    let server = Server::start(&[]);
    assert_eq!(success(&run_at(&server, &["ping"])), b"pong\n");
}

#[test]
fn stats_prints_json_or_says_the_endpoint_is_missing() {
    // Goal: `stats` pretty-prints the server's JSON, or (before /v1/stats exists) fails with a clear one-line cause.
    let server = Server::start(&[]);
    let output = run_at(&server, &["stats"]);
    if code(&output) == 0 {
        let stats: serde_json::Value = serde_json::from_slice(success(&output)).expect("stats prints JSON");
        assert!(stats.is_object(), "{stats}");
    } else {
        assert!(failure(&output, EXIT_SERVER).contains("/v1/stats"));
    }
}

#[test]
fn set_accepts_a_ttl() {
    // Goal: `set --ttl-ms N` is sent and accepted; a long TTL leaves the value readable right away.
    let server = Server::start(&[]);
    assert_eq!(success(&run_at(&server, &["set", "--ttl-ms", "600000", "t", "v"])), b"");
    assert_eq!(success(&run_at(&server, &["get", "t"])), b"v");
}

#[test]
fn server_errors_exit_5_with_the_servers_message() {
    // Goal: a 4xx error answer (here a key over the server's length limit) gives exit 5 and the server's message.
    let server = Server::start(&[]);
    let long_key = "k".repeat(300);
    let stderr = failure(&run_at(&server, &["set", &long_key, "v"]), EXIT_SERVER);
    assert!(
        stderr.len() > "ERROR: \n".len(),
        "the server's message is printed: {stderr:?}"
    );
}

#[test]
fn connection_refused_is_one_line_and_exit_3() {
    // Goal: with nothing listening, every command fails with the connection exit code and one line, no panic.
    let addr = dead_addr();
    for args in [
        &["get", "k"][..],
        &["set", "k", "v"],
        &["ping"],
        &["delete", "--key", "k"],
    ] {
        let output = client(&[args, &["--addr", &addr]].concat())
            .output()
            .expect("run the client");
        let stderr = failure(&output, EXIT_CONNECT);
        assert!(stderr.contains(&addr), "{stderr}");
        assert_eq!(output.stdout, b"");
    }
}

#[test]
fn a_silent_server_times_out_with_exit_4() {
    // Goal: a peer that accepts but never answers makes the client give up after --timeout-ms with exit 4.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let output = client(&["get", "k", "--addr", &addr, "--timeout-ms", "200"])
        .output()
        .expect("run the client");
    assert!(failure(&output, EXIT_TIMEOUT).contains("200 ms"));
    drop(listener);
}

#[test]
fn corekv_addr_is_honoured_and_the_flag_wins() {
    // Goal: `COREKV_ADDR` picks the server when `--addr` is absent; `--addr` overrides it.
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let output = client(&["ping"])
        .env("COREKV_ADDR", &addr)
        .output()
        .expect("run the client");
    assert_eq!(success(&output), b"pong\n");
    let output = client(&["ping", "--addr", &addr])
        .env("COREKV_ADDR", dead_addr())
        .output()
        .expect("run the client");
    assert_eq!(success(&output), b"pong\n");
    let output = client(&["ping"])
        .env("COREKV_ADDR", dead_addr())
        .output()
        .expect("run the client");
    failure(&output, EXIT_CONNECT);
}

#[test]
fn usage_errors_exit_2() {
    // Goal: missing, doubled or malformed arguments exit 2 with clap's message and contact no server.
    let addr = dead_addr();
    for args in [
        &["get"][..],
        &["get", "k", "--key", "k"],
        &["read"],
        &["set", "k"],
        &["store", "--key", "k"],
        &["set", "k", "v", "--value", "v"],
        &["update", "k"],
        &["bulk-update"],
        &["frobnicate"],
        &["set", "k", "v", "--ttl-ms", "soon"],
        &["ping", "--timeout-ms", "0"],
        &["ping", "--addr", "no-port"],
        &["get", ""],
    ] {
        let output = client(args).env("COREKV_ADDR", &addr).output().expect("run the client");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(code(&output), EXIT_USAGE, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("connect"),
            "{args:?} reached for the network: {stderr}"
        );
    }
}

#[test]
fn a_closed_stdout_is_a_clean_error() {
    // Goal: `get` into a pipe whose reader is gone exits 6 with one line instead of a panic.
    let server = Server::start(&[]);
    assert_eq!(success(&run_at(&server, &["set", "big", &"x".repeat(1000)])), b"");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let addr = server.addr.to_string();
    let output = client(&["get", "big", "--addr", &addr])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run the client");
    assert!(failure(&output, EXIT_LOCAL_IO).contains("standard output"));
}

#[test]
fn client_options_work_before_and_after_the_subcommand() {
    // Goal: --addr and --timeout-ms are accepted before or after the subcommand, and after wins.
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let run = |args: &[&str]| client(args).output().expect("run the client");
    assert_eq!(success(&run(&["--addr", &addr, "set", "k", "v"])), b"");
    assert_eq!(
        success(&run(&["--addr", &addr, "--timeout-ms", "5000", "get", "k"])),
        b"v"
    );
    assert_eq!(
        success(&run(&["get", "k", "--addr", &addr, "--timeout-ms", "5000"])),
        b"v"
    );
    assert_eq!(
        success(&run(&["--addr", &dead_addr(), "get", "k", "--addr", &addr])),
        b"v"
    );
    failure(
        &run(&["--addr", &addr, "get", "k", "--addr", &dead_addr()]),
        EXIT_CONNECT,
    );

    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("local addr").to_string();
    let output = run(&["--timeout-ms", "200", "--addr", &silent_addr, "ping"]);
    assert!(failure(&output, EXIT_TIMEOUT).contains("200 ms"));
}

#[test]
fn client_options_fall_back_to_their_environment_variables() {
    // Goal: COREKV_ADDR, COREKV_TIMEOUT_MS and COREKV_OUTPUT are read, and a flag in either position beats them.
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let output = client(&["ping"])
        .env("COREKV_ADDR", &addr)
        .env("COREKV_OUTPUT", "json")
        .output()
        .expect("run the client");
    assert_eq!(success(&output), b"{\"pong\":true}\n");
    let output = client(&["--output", "text", "ping"])
        .env("COREKV_ADDR", &addr)
        .env("COREKV_OUTPUT", "json")
        .output()
        .expect("run the client");
    assert_eq!(success(&output), b"pong\n");
    let output = client(&["--addr", &addr, "ping"])
        .env("COREKV_ADDR", dead_addr())
        .output()
        .expect("run the client");
    assert_eq!(success(&output), b"pong\n");

    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let output = client(&["ping"])
        .env("COREKV_ADDR", silent.local_addr().expect("local addr").to_string())
        .env("COREKV_TIMEOUT_MS", "150")
        .output()
        .expect("run the client");
    assert!(failure(&output, EXIT_TIMEOUT).contains("150 ms"));
}

/// Runs the client with `--output json` against `server` and parses its stdout, which must be
/// exactly one JSON document on one line.
fn json_output(server: &Server, args: &[&str], expected_code: i32) -> serde_json::Value {
    let output = client(&[&["--output", "json", "--addr", &server.addr.to_string()], args].concat())
        .output()
        .expect("run the client");
    assert_eq!(
        code(&output),
        expected_code,
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = text(&output.stdout);
    assert_eq!(stdout.matches('\n').count(), 1, "one line: {stdout:?}");
    serde_json::from_str(stdout).unwrap_or_else(|error| panic!("{args:?} printed no JSON ({error}): {stdout:?}"))
}

#[test]
fn output_json_prints_one_document_per_command() {
    // Goal: with --output json every command, failures included, prints one JSON document saying what happened.
    let server = Server::start(&[]);
    let json = |args: &[&str], code: i32| json_output(&server, args, code);
    use serde_json::json as doc;
    assert_eq!(json(&["set", "k", "v1"], 0), doc!({"key": "k", "stored": true}));
    let read = json(&["get", "k"], 0);
    assert_eq!((&read["key"], &read["value"]), (&doc!("k"), &doc!("v1")));
    assert!(read["version"].is_string(), "get prints the key's version: {read}");
    assert_eq!(json(&["update", "k", "v2"], 0), doc!({"key": "k", "updated": true}));
    assert_eq!(json(&["get", "k"], 0)["value"], "v2");
    assert_eq!(json(&["delete", "k"], 0), doc!({"key": "k", "deleted": true}));
    assert_eq!(json(&["delete", "k"], 0), doc!({"key": "k", "deleted": false}));
    assert_eq!(json(&["ping"], 0), doc!({"pong": true}));
    assert!(json(&["stats"], 0).is_object());

    let missing = json(&["get", "k"], EXIT_NOT_FOUND);
    assert_eq!(
        missing,
        doc!({"error": "no key `k` found", "exit_code": EXIT_NOT_FOUND})
    );
    let too_long = json(&["set", &"k".repeat(300), "v"], EXIT_SERVER);
    assert_eq!(too_long["exit_code"], EXIT_SERVER);
    assert!(
        too_long["error"].as_str().is_some_and(|error| !error.is_empty()),
        "{too_long}"
    );

    // A value that is not UTF-8 comes back base64-encoded rather than mangled.
    let addr = server.addr.to_string();
    let output = run_with_stdin(client(&["set", "bin", "-", "--addr", &addr]), b"\xff\x00");
    assert_eq!(success(&output), b"");
    assert_eq!(json(&["get", "bin"], 0)["value_base64"], doc!("/wA="));

    // bulk-update prints the server's answer as its one document, also when some keys are missing.
    let dir = std::env::temp_dir().join(format!("corekv-client-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("updates.json");
    std::fs::write(
        &file,
        r#"[{"key": "bin", "value": "1"}, {"key": "nope", "value": "2"}]"#,
    )
    .expect("write file");
    let answer = json(
        &["bulk-update", file.to_str().expect("UTF-8 temp path")],
        EXIT_NOT_FOUND,
    );
    assert_eq!(answer["missing"], doc!(["nope"]), "{answer}");
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}

#[test]
fn output_json_reports_a_connection_failure_as_a_document() {
    // Goal: with nothing listening, --output json still prints {"error", "exit_code": 3} and the ERROR line.
    let output = client(&["--output", "json", "--addr", &dead_addr(), "ping"])
        .output()
        .expect("run the client");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(code(&output), EXIT_CONNECT, "{stderr}");
    assert!(stderr.starts_with("ERROR: "), "{stderr}");
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON document on stdout");
    assert_eq!(document["exit_code"], EXIT_CONNECT);
    assert_eq!(
        document["error"].as_str(),
        stderr.strip_prefix("ERROR: ").map(str::trim_end)
    );
}

#[test]
fn completions_name_the_subcommands_for_each_shell() {
    // Goal: `corekv completions bash|zsh|fish` prints a non-empty script that knows the subcommands and options.
    for shell in ["bash", "zsh", "fish"] {
        let output = client(&["completions", shell]).output().expect("run the client");
        let script = text(success(&output)).to_string();
        for word in ["serve", "get", "bulk-update", "timeout-ms", "token"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    failure_usage(&["completions", "tcsh"]);
}

/// Asserts clap refused `args` as a usage error.
fn failure_usage(args: &[&str]) -> String {
    let output = client(args).output().expect("run the client");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(code(&output), EXIT_USAGE, "{args:?}: {stderr}");
    stderr
}

/// A one-shot HTTP peer: accepts one connection, answers `200 OK` with an empty body, and
/// returns the request head it received.
fn capture_one_request() -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let peer = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(common::IO_TIMEOUT)).expect("timeout");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            if reader.read_line(&mut head).expect("read the request") == 0 {
                break;
            }
        }
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        reader.get_mut().write_all(answer).expect("answer");
        head
    });
    (addr, peer)
}

#[test]
fn a_token_is_sent_as_a_bearer_header_and_never_shown() {
    // Goal: --token (before or after the subcommand) and COREKV_TOKEN send `Authorization: Bearer`; without one, no header; help hides its value.
    for (args, env) in [
        (&["--token", "s3cr3t", "ping"][..], None),
        (&["ping", "--token", "s3cr3t"], None),
        (&["ping"], Some("s3cr3t")),
        (&["--token", "s3cr3t", "ping"], Some("other")),
    ] {
        let (addr, peer) = capture_one_request();
        let mut command = client(&[args, &["--addr", &addr]].concat());
        if let Some(token) = env {
            command.env("COREKV_TOKEN", token);
        }
        let output = command.output().expect("run the client");
        assert_eq!(success(&output), b"pong\n");
        let head = peer.join().expect("the capturing peer");
        assert!(
            head.contains("\r\nAuthorization: Bearer s3cr3t\r\n"),
            "{args:?} {env:?}: {head}"
        );
    }
    let (addr, peer) = capture_one_request();
    assert_eq!(
        success(&client(&["ping", "--addr", &addr]).output().expect("run")),
        b"pong\n"
    );
    let head = peer.join().expect("the capturing peer");
    assert!(!head.to_ascii_lowercase().contains("authorization"), "{head}");

    let help = client(&["--help"]).env("COREKV_TOKEN", "s3cr3t").output().expect("run");
    let help = text(success(&help)).to_string();
    assert!(help.contains("COREKV_TOKEN") && !help.contains("s3cr3t"), "{help}");
}

#[test]
fn help_shows_the_client_options_and_serve_keeps_its_own_addr() {
    // Goal: `corekv --help` lists the client options with their variables; `--addr` before `serve` is refused, after it is serve's.
    let help = client(&["--help"]).output().expect("run");
    let help = text(success(&help)).to_string();
    for word in [
        "--addr",
        "COREKV_ADDR",
        "--timeout-ms",
        "COREKV_TIMEOUT_MS",
        "--token",
        "--output",
        "COREKV_OUTPUT",
        "Exit status:",
        "serve --addr",
    ] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
    let serve_help = client(&["serve", "--help"]).output().expect("run");
    let serve_help = text(success(&serve_help)).to_string();
    assert!(
        serve_help.contains("--addr") && !serve_help.contains("--token"),
        "{serve_help}"
    );
    let stderr = failure_usage(&["--addr", "127.0.0.1:1", "serve"]);
    assert!(stderr.contains("serve --addr"), "{stderr}");
    // common::Server starts `corekv serve --addr 127.0.0.1:0`: serve's own --addr still works.
    let server = Server::start(&[]);
    assert_ne!(server.addr.port(), 0);
}

// Goal: `set --if-version` writes only over the version `get --output json` printed,
// `--create-only` only when the key is absent; a failed condition exits 5 with the server's
// 412 message and changes nothing.
#[test]
fn conditional_sets_follow_the_printed_version() {
    let server = Server::start(&[]);
    success(&run_at(&server, &["set", "k", "one", "--create-only"]));
    let message = failure(&run_at(&server, &["set", "k", "two", "--create-only"]), 5);
    assert!(message.contains("precondition"), "{message}");
    let read: serde_json::Value =
        serde_json::from_slice(success(&run_at(&server, &["get", "k", "--output", "json"]))).unwrap();
    let version = read["version"].as_str().expect("get prints the version").to_string();
    success(&run_at(&server, &["set", "k", "two", "--if-version", &version]));
    let stale = failure(&run_at(&server, &["set", "k", "three", "--if-version", &version]), 5);
    assert!(stale.contains("precondition"), "{stale}");
    assert_eq!(success(&run_at(&server, &["get", "k"])), b"two");
    failure(&run_at(&server, &["set", "k", "x", "--if-version", "nothex"]), 2);
    let both = run_at(&server, &["set", "k", "x", "--if-version", "1", "--create-only"]);
    assert_eq!(code(&both), 2, "the two conditions exclude each other");
}
