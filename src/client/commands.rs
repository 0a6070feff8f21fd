//! What each client subcommand sends, and what it makes of the answer.
//!
//! Owns the mapping from a subcommand to one request of the public v1 API, and from the
//! response's status to output and to [`ClientError`]. It never touches a socket itself (that is
//! [`super::http`]) and never prints an error: it returns it, and [`super::run`] prints it.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use super::error::{ClientError, printable};
use super::http::{Endpoint, Request, Response, percent_encode};
use super::{
    BULK_FILE_BYTES_MAX, BulkUpdateArgs, ClientCommand, ClusterCommand, KeyArgs, KeyInput, ListArgs, Output,
    STDIN_VALUE_BYTES_MAX, SetArgs, Settings, UpdateArgs, ValueInput, WatchArgs,
};

/// How raw values are labelled on the wire: the API stores bytes, whatever they are.
const CONTENT_TYPE_VALUE: &str = "application/octet-stream";
/// How bulk-update bodies are labelled.
const CONTENT_TYPE_JSON: &str = "application/json";

/// Where a command's result goes: stdout, as text or as one JSON document. Remembers whether
/// a document was printed, so that a failure after it does not print a second one.
pub struct Printer {
    output: Output,
    printed: bool,
}

impl Printer {
    /// A printer to stdout in `output`'s format.
    pub fn new(output: Output) -> Printer {
        Printer { output, printed: false }
    }

    /// True once something was written to stdout.
    pub fn printed(&self) -> bool {
        self.printed
    }

    /// `value` as one compact JSON line (for `--output json`), or pretty (for text).
    pub fn json(&mut self, value: &serde_json::Value) -> Result<(), ClientError> {
        let mut text = match self.output {
            Output::Json => serde_json::to_string(value),
            Output::Text => serde_json::to_string_pretty(value),
        }
        .expect("a serde_json::Value always serializes: its map keys are strings");
        text.push('\n');
        self.bytes(text.as_bytes())
    }

    /// `text` in text mode, `document` in JSON mode.
    fn either(&mut self, text: &[u8], document: serde_json::Value) -> Result<(), ClientError> {
        match self.output {
            Output::Text => self.bytes(text),
            Output::Json => self.json(&document),
        }
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.printed = true;
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .map_err(ClientError::Output)
    }
}

/// Runs one subcommand to completion against the server `settings` name.
pub fn execute(command: ClientCommand, settings: &Settings, printer: &mut Printer) -> Result<(), ClientError> {
    let endpoint = Endpoint {
        addr: settings.addr.clone(),
        timeout_ms: settings.timeout_ms,
        token: settings.token.clone(),
    };
    match command {
        ClientCommand::Get(args) => get(&endpoint, args, printer),
        ClientCommand::Set(args) => set(&endpoint, args, printer),
        ClientCommand::Update(args) => update(&endpoint, args, printer),
        ClientCommand::Delete(args) => delete(&endpoint, args, printer),
        ClientCommand::BulkUpdate(args) => bulk_update(&endpoint, args, printer),
        ClientCommand::List(args) => list(&endpoint, args, printer),
        ClientCommand::Watch(args) => watch(&endpoint, args, printer),
        ClientCommand::Ping(_) => ping(&endpoint, printer),
        ClientCommand::Stats(_) => stats(&endpoint, printer),
        ClientCommand::Cluster(ClusterCommand::Status(_)) => cluster_status(&endpoint, printer),
    }
}

/// `GET /v1/keys/{key}`: the value's exact bytes to stdout, or `{"key", "value"}` as JSON.
fn get(endpoint: &Endpoint, args: KeyArgs, printer: &mut Printer) -> Result<(), ClientError> {
    let key = key_bytes(args.key)?;
    let response = endpoint.send(&Request {
        method: "GET",
        target: key_target(&key),
        content_type: None,
        body: None,
        precondition: None,
    })?;
    match response.status {
        200 if printer.output == Output::Json => {
            let mut document = serde_json::Map::new();
            bytes_field(&mut document, "key", &key);
            bytes_field(&mut document, "value", &response.body);
            if let Some(etag) = response.header("etag") {
                let version = etag.trim_matches('"').to_string();
                document.insert("version".into(), serde_json::Value::String(version));
            }
            printer.json(&serde_json::Value::Object(document))
        }
        200 => {
            // Values are bytes, not lines: a newline is added only for a person at a terminal,
            // so `corekv get k > file` and pipes get exactly what was stored.
            let newline = io::stdout().is_terminal();
            let value = [&response.body[..], if newline { b"\n" } else { b"" }].concat();
            printer.bytes(&value)
        }
        404 => Err(not_found(&key)),
        _ => Err(unexpected(&response)),
    }
}

/// `PUT /v1/keys/{key}[?ttl_ms=N]`: create or replace. Silent on success, as seed 002 was.
fn set(endpoint: &Endpoint, args: SetArgs, printer: &mut Printer) -> Result<(), ClientError> {
    let key = key_bytes(args.key)?;
    let value = value_bytes(args.value)?;
    let mut target = key_target(&key);
    if let Some(ttl_ms) = args.ttl_ms {
        target.push_str(&format!("?ttl_ms={ttl_ms}"));
    }
    let precondition = match (args.if_version, args.create_only) {
        (Some(version), _) => Some(("If-Match", quoted_etag(&version)?)),
        (None, true) => Some(("If-None-Match", "*".to_string())),
        (None, false) => None,
    };
    let response = endpoint.send(&Request {
        method: "PUT",
        target,
        content_type: Some(CONTENT_TYPE_VALUE),
        body: Some(&value),
        precondition,
    })?;
    match response.status {
        200 | 201 => printer.either(b"", key_document(&key, "stored", true)),
        _ => Err(unexpected(&response)),
    }
}

/// `PATCH /v1/keys/{key}`: replace an existing key's value; 404 means it was not there.
fn update(endpoint: &Endpoint, args: UpdateArgs, printer: &mut Printer) -> Result<(), ClientError> {
    let key = key_bytes(args.key)?;
    let value = value_bytes(args.value)?;
    let response = endpoint.send(&Request {
        method: "PATCH",
        target: key_target(&key),
        content_type: Some(CONTENT_TYPE_VALUE),
        body: Some(&value),
        precondition: None,
    })?;
    match response.status {
        200 | 204 => printer.either(b"", key_document(&key, "updated", true)),
        404 => Err(not_found(&key)),
        _ => Err(unexpected(&response)),
    }
}

/// `DELETE /v1/keys/{key}`: idempotent, so `{"deleted": false}` is success too.
fn delete(endpoint: &Endpoint, args: KeyArgs, printer: &mut Printer) -> Result<(), ClientError> {
    let key = key_bytes(args.key)?;
    let response = endpoint.send(&Request {
        method: "DELETE",
        target: key_target(&key),
        content_type: None,
        body: None,
        precondition: None,
    })?;
    match response.status {
        200 | 204 => {
            // The server says whether the key existed; a 204 or a bare body says nothing.
            let deleted = serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|answer| answer.get("deleted").and_then(serde_json::Value::as_bool));
            let mut document = key_document(&key, "deleted", deleted.unwrap_or(true));
            if deleted.is_none() {
                document["deleted"] = serde_json::Value::Null;
            }
            printer.either(b"", document)
        }
        _ => Err(unexpected(&response)),
    }
}

/// `PATCH /v1/keys` with the file's JSON array: prints the server's answer; missing keys are
/// named on stderr and make the exit code [`super::EXIT_NOT_FOUND`].
fn bulk_update(endpoint: &Endpoint, args: BulkUpdateArgs, printer: &mut Printer) -> Result<(), ClientError> {
    let body = read_bulk_file(&args.file)?;
    let response = endpoint.send(&Request {
        method: "PATCH",
        target: "/v1/keys".into(),
        content_type: Some(CONTENT_TYPE_JSON),
        body: Some(&body),
        precondition: None,
    })?;
    if !matches!(response.status, 200 | 206) {
        return Err(unexpected(&response));
    }
    let answer = json_body(endpoint, &response)?;
    let missing = match answer.get("missing") {
        None => Vec::new(),
        Some(serde_json::Value::Array(missing)) => missing
            .iter()
            .map(|key| match key {
                serde_json::Value::String(key) => printable(key.as_bytes()),
                other => printable(other.to_string().as_bytes()),
            })
            .collect(),
        Some(_) => {
            return Err(ClientError::BadResponse {
                addr: endpoint.addr.clone(),
                reason: "`missing` in the bulk-update answer is not an array".into(),
            });
        }
    };
    printer.json(&answer)?;
    // 206 is the server saying "some were missing"; trust it even if it named none.
    if missing.is_empty() && response.status == 200 {
        Ok(())
    } else {
        Err(ClientError::NotFound(missing))
    }
}

/// Keys asked for per page by `list` (each page is one request and one bounded response).
const LIST_PAGE_KEYS: u64 = 1_000;

/// `GET /v1/keys?prefix=...`, page after page through the cursors: one key per line (a tab
/// and the value with `--values`) as each page arrives, or one `{"keys": [...]}` /
/// `{"items": [...]}` document with `--output json`.
fn list(endpoint: &Endpoint, args: ListArgs, printer: &mut Printer) -> Result<(), ClientError> {
    let prefix = args.prefix.map(OsString::into_vec).unwrap_or_default();
    let field = if args.values { "items" } else { "keys" };
    let (mut cursor, mut printed, mut document) = (None::<String>, 0u64, Vec::new());
    loop {
        let page = args
            .limit
            .map_or(LIST_PAGE_KEYS, |limit| (limit - printed).min(LIST_PAGE_KEYS));
        let mut target = format!("/v1/keys?prefix={}&limit={page}", percent_encode(&prefix));
        if args.values {
            target.push_str("&values=true");
        }
        if let Some(cursor) = &cursor {
            target.push_str(&format!("&cursor={cursor}"));
        }
        let response = endpoint.send(&Request {
            method: "GET",
            target,
            content_type: None,
            body: None,
            precondition: None,
        })?;
        if response.status != 200 {
            return Err(unexpected(&response));
        }
        let body = json_body(endpoint, &response)?;
        let items = body
            .get(field)
            .and_then(|v| v.as_array())
            .ok_or_else(|| ClientError::BadResponse {
                addr: endpoint.addr.clone(),
                reason: format!("a listing without \"{field}\""),
            })?;
        printed += items.len() as u64;
        match printer.output {
            Output::Json => document.extend(items.iter().cloned()),
            Output::Text => printer.bytes(list_lines(items, args.values).as_bytes())?,
        }
        cursor = body.get("cursor").and_then(|c| c.as_str()).map(String::from);
        if cursor.is_none() || args.limit.is_some_and(|limit| printed >= limit) {
            break;
        }
    }
    if printer.output == Output::Json {
        printer.json(&serde_json::json!({ field: document }))?;
    }
    Ok(())
}

/// A page of a listing as text: `key` or `key<TAB>value` per line.
fn list_lines(items: &[serde_json::Value], values: bool) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut lines = String::new();
    for item in items {
        if values {
            lines.push_str(&format!("{}\t{}\n", text(&item["key"]), text(&item["value"])));
        } else {
            lines.push_str(&format!("{}\n", text(item)));
        }
    }
    lines
}

/// `GET /v1/watch/KEY` or `/v1/watch?prefix=`: prints each event as it arrives, until the
/// server ends the stream (shutdown: success) or cuts the watcher off (`dropped`,
/// `compacted`: a server error naming why).
fn watch(endpoint: &Endpoint, args: WatchArgs, printer: &mut Printer) -> Result<(), ClientError> {
    let from = args.from.map(|id| format!("from={}", percent_encode(id.as_bytes())));
    let target = match (args.key, args.prefix) {
        (Some(key), _) => format!(
            "/v1/watch/{}?{}",
            percent_encode(&key.into_vec()),
            from.unwrap_or_default()
        ),
        (None, prefix) => {
            let prefix = percent_encode(&prefix.map(OsString::into_vec).unwrap_or_default());
            format!("/v1/watch?prefix={prefix}&{}", from.unwrap_or_default())
        }
    };
    let request = Request {
        method: "GET",
        target,
        content_type: None,
        body: None,
        precondition: None,
    };
    let mut reader = match endpoint.open_stream(&request)? {
        Ok(reader) => reader,
        Err(response) => return Err(unexpected(&response)),
    };
    let lost = |source| ClientError::ConnectionLost {
        addr: endpoint.addr.clone(),
        phase: super::Phase::Receiving,
        source,
    };
    let (mut name, mut id) = (String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        if io::BufRead::read_line(&mut reader, &mut line).map_err(lost)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(value) = line.strip_prefix("event: ") {
            name = value.to_string();
        } else if let Some(value) = line.strip_prefix("id: ") {
            id = value.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let data: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            watch_event(printer, &name, &id, &data)?;
            if let "dropped" | "compacted" = name.as_str() {
                return Err(ClientError::Server {
                    status: 200,
                    message: format!("{name}: {}", data["error"].as_str().unwrap_or_default()),
                });
            }
        }
    }
}

/// Prints one watch event: `ID<TAB>EVENT<TAB>KEY[<TAB>VALUE]`, or a JSON line.
fn watch_event(printer: &mut Printer, name: &str, id: &str, data: &serde_json::Value) -> Result<(), ClientError> {
    if printer.output == Output::Json {
        return printer.json(&serde_json::json!({ "event": name, "id": id, "data": data }));
    }
    if let "ready" | "dropped" | "compacted" | "shutdown" = name {
        return Ok(());
    }
    let text = |field: &str| data[field].as_str().unwrap_or_default().to_string();
    let mut line = format!("{id}\t{name}\t{}", text("key"));
    if data.get("value").is_some() {
        line.push('\t');
        line.push_str(&text("value"));
    }
    line.push('\n');
    printer.bytes(line.as_bytes())
}

/// `GET /v1/ping`: prints `pong` on a 200.
fn ping(endpoint: &Endpoint, printer: &mut Printer) -> Result<(), ClientError> {
    let response = endpoint.send(&Request {
        method: "GET",
        target: "/v1/ping".into(),
        content_type: None,
        body: None,
        precondition: None,
    })?;
    match response.status {
        200 => printer.either(b"pong\n", serde_json::json!({"pong": true})),
        _ => Err(unexpected(&response)),
    }
}

/// `GET /v1/stats`: the server's JSON, pretty-printed (one line with `--output json`).
fn stats(endpoint: &Endpoint, printer: &mut Printer) -> Result<(), ClientError> {
    // An older server has no such route; say so instead of a bare "not found".
    get_json(endpoint, printer, "/v1/stats", "has no /v1/stats endpoint")
}

/// `corekv cluster status`: `GET /v1/cluster`, pretty JSON.
fn cluster_status(endpoint: &Endpoint, printer: &mut Printer) -> Result<(), ClientError> {
    get_json(
        endpoint,
        printer,
        "/v1/cluster",
        "does not run as a cluster (started without --peers)",
    )
}

/// GETs `target` and prints its JSON; a 404 is explained as "the server at ADDR {absent}".
fn get_json(endpoint: &Endpoint, printer: &mut Printer, target: &str, absent: &str) -> Result<(), ClientError> {
    let response = endpoint.send(&Request {
        method: "GET",
        target: target.into(),
        content_type: None,
        body: None,
        precondition: None,
    })?;
    match response.status {
        200 => printer.json(&json_body(endpoint, &response)?),
        404 => Err(ClientError::Server {
            status: 404,
            message: format!(
                "the server at {} {absent} (404: {})",
                endpoint.addr,
                server_message(&response)
            ),
        }),
        _ => Err(unexpected(&response)),
    }
}

/// `{"key": KEY, field: value}`, the JSON answer of a write.
fn key_document(key: &[u8], field: &str, value: bool) -> serde_json::Value {
    let mut document = serde_json::Map::new();
    bytes_field(&mut document, "key", key);
    document.insert(field.into(), value.into());
    serde_json::Value::Object(document)
}

/// Bytes into a JSON object: as the string `name` when they are UTF-8, else base64-encoded as
/// `name_base64`, so that no byte is lost or mangled.
fn bytes_field(document: &mut serde_json::Map<String, serde_json::Value>, name: &str, bytes: &[u8]) {
    use base64::Engine as _;
    match std::str::from_utf8(bytes) {
        Ok(text) => document.insert(name.into(), text.into()),
        Err(_) => document.insert(
            format!("{name}_base64"),
            base64::engine::general_purpose::STANDARD.encode(bytes).into(),
        ),
    };
}

/// `/v1/keys/{key}` with the key percent-encoded into one path segment.
/// `--if-version V` as an `If-Match` value: the version's hex digits in quotes (given with or
/// without them).
fn quoted_etag(version: &str) -> Result<String, ClientError> {
    let digits = version.trim_matches('"');
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::Usage(format!(
            "--if-version takes a version as `get --output json` prints it (hex digits), not `{version}`"
        )));
    }
    Ok(format!("\"{digits}\""))
}

fn key_target(key: &[u8]) -> String {
    format!("/v1/keys/{}", percent_encode(key))
}

/// The key's bytes, from whichever of `KEY` and `--key` was given (clap guarantees exactly one).
fn key_bytes(input: KeyInput) -> Result<Vec<u8>, ClientError> {
    let key = one_of(input.key, input.key_flag, "KEY")?.into_vec();
    if key.is_empty() {
        return Err(ClientError::Usage(
            "the key is empty; a key needs at least one byte".into(),
        ));
    }
    Ok(key)
}

/// The value's bytes: the argument itself, or stdin when it is `-`.
fn value_bytes(input: ValueInput) -> Result<Vec<u8>, ClientError> {
    let value = one_of(input.value, input.value_flag, "VALUE")?;
    if value == "-" {
        let what = "standard input";
        return read_bounded(io::stdin().lock(), STDIN_VALUE_BYTES_MAX, what);
    }
    Ok(value.into_vec())
}

/// The single argument of a positional/flag pair.
fn one_of(positional: Option<OsString>, flag: Option<OsString>, name: &str) -> Result<OsString, ClientError> {
    match (positional, flag) {
        (Some(value), None) | (None, Some(value)) => Ok(value),
        // clap's `required = true, multiple = false` group rules these out before we run; kept
        // as a usage error rather than a panic in case the definitions ever drift apart.
        _ => Err(ClientError::Usage(format!(
            "give {name} either as an argument or with --{}",
            name.to_lowercase()
        ))),
    }
}

/// Reads the bulk-update body and checks it is a JSON array before anything is sent, so a
/// wrong file is named as such instead of coming back as a server's 400.
fn read_bulk_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    let (body, what) = if path.as_os_str() == "-" {
        let what = "standard input".to_string();
        (read_bounded(io::stdin().lock(), BULK_FILE_BYTES_MAX, &what)?, what)
    } else {
        let what = format!("`{}`", path.display());
        let file = std::fs::File::open(path).map_err(|source| ClientError::Input {
            what: what.clone(),
            source,
        })?;
        (read_bounded(file, BULK_FILE_BYTES_MAX, &what)?, what)
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(_)) => Ok(body),
        Ok(_) => Err(ClientError::Usage(format!(
            "{what} is not a JSON array; bulk-update takes [{{\"key\": \"...\", \"value\": \"...\"}}, ...]"
        ))),
        Err(error) => Err(ClientError::Usage(format!("{what} is not valid JSON: {error}"))),
    }
}

/// Reads all of `input`, refusing more than `bytes_max` (the server would refuse it anyway,
/// after we had spent the memory and the upload).
fn read_bounded(input: impl Read, bytes_max: u64, what: &str) -> Result<Vec<u8>, ClientError> {
    let mut bytes = Vec::new();
    input
        .take(bytes_max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ClientError::Input {
            what: what.to_string(),
            source,
        })?;
    if bytes.len() as u64 > bytes_max {
        return Err(ClientError::Usage(format!(
            "{what} holds more than {bytes_max} bytes, more than any server accepts"
        )));
    }
    Ok(bytes)
}

/// A response body that must be JSON.
fn json_body(endpoint: &Endpoint, response: &Response) -> Result<serde_json::Value, ClientError> {
    serde_json::from_slice(&response.body).map_err(|error| ClientError::BadResponse {
        addr: endpoint.addr.clone(),
        reason: format!("a {} answer whose body is not JSON ({error})", response.status),
    })
}

fn not_found(key: &[u8]) -> ClientError {
    ClientError::NotFound(vec![printable(key)])
}

/// Any status the command does not expect: the server's own error text when it sent one.
fn unexpected(response: &Response) -> ClientError {
    ClientError::Server {
        status: response.status,
        message: server_message(response),
    }
}

/// The `error` field of a JSON error body, or a description of the status and body.
fn server_message(response: &Response) -> String {
    const BODY_SNIPPET_CHARS_MAX: usize = 200;
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(&response.body)
        && let Some(serde_json::Value::String(message)) = object.get("error")
    {
        return printable(message.as_bytes());
    }
    let body = printable(&response.body);
    let body: String = body.chars().take(BODY_SNIPPET_CHARS_MAX).collect();
    match body.trim() {
        "" => format!("the server answered with status {}", response.status),
        body => format!("the server answered with status {}: {body}", response.status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &[u8]) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn server_errors_print_the_servers_message() {
        let error = unexpected(&response(413, br#"{"error": "value too large"}"#));
        assert_eq!(error.to_string(), "value too large");
        assert_eq!(error.exit_code(), super::super::EXIT_SERVER);
        assert_eq!(
            unexpected(&response(500, b"")).to_string(),
            "the server answered with status 500"
        );
        assert_eq!(
            unexpected(&response(502, b"<html>bad\ngateway</html>")).to_string(),
            "the server answered with status 502: <html>bad\\ngateway</html>"
        );
        assert_eq!(
            unexpected(&response(400, br#"{"error": "line\nbreak"}"#)).to_string(),
            "line\\nbreak",
            "a server message cannot break the one-line rule"
        );
    }

    #[test]
    fn key_targets_are_one_encoded_segment() {
        assert_eq!(key_target(b"mykey"), "/v1/keys/mykey");
        assert_eq!(key_target(b"a/b?c"), "/v1/keys/a%2Fb%3Fc");
    }

    #[test]
    fn empty_keys_are_usage_errors() {
        let error = key_bytes(KeyInput {
            key: Some(OsString::new()),
            key_flag: None,
        })
        .unwrap_err();
        assert_eq!(error.exit_code(), super::super::EXIT_USAGE);
        let error = one_of(None, None, "KEY").unwrap_err();
        assert_eq!(error.exit_code(), super::super::EXIT_USAGE);
    }

    #[test]
    fn non_utf8_values_pass_through_unchanged() {
        let raw = OsString::from_vec(vec![0xff, 0x00, b'a']);
        let value = value_bytes(ValueInput {
            value: Some(raw),
            value_flag: None,
        })
        .unwrap();
        assert_eq!(value, [0xff, 0x00, b'a']);
    }

    #[test]
    fn bounded_reads_refuse_one_byte_too_many() {
        assert_eq!(read_bounded(&b"abc"[..], 3, "x").unwrap(), b"abc");
        let error = read_bounded(&b"abcd"[..], 3, "x").unwrap_err();
        assert_eq!(error.exit_code(), super::super::EXIT_USAGE);
    }

    #[test]
    fn bulk_files_must_be_json_arrays() {
        let dir = std::env::temp_dir().join(format!("corekv-client-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let array = file("array.json", r#"[{"key": "a", "value": "1"}]"#);
        assert_eq!(read_bulk_file(&array).unwrap(), br#"[{"key": "a", "value": "1"}]"#);
        let object = file("object.json", r#"{"key": "a"}"#);
        assert_eq!(
            read_bulk_file(&object).unwrap_err().exit_code(),
            super::super::EXIT_USAGE
        );
        let garbage = file("garbage.json", "[1,");
        assert_eq!(
            read_bulk_file(&garbage).unwrap_err().exit_code(),
            super::super::EXIT_USAGE
        );
        let absent = read_bulk_file(&dir.join("absent.json")).unwrap_err();
        assert_eq!(absent.exit_code(), super::super::EXIT_LOCAL_IO);
        assert!(absent.to_string().contains("absent.json"), "{absent}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
