//! Encodes responses straight into a connection's write buffer: status line, the few headers
//! the API needs, and the body, with no intermediate allocation.
//!
//! Owns the response wire format only; what to answer is decided by [`crate::api`].

use crate::error::Error;

/// The reason phrase for each status the server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Content type of stored values.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// Content type of every JSON body.
pub const JSON: &str = "application/json";

/// Appends the decimal digits of `n`.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Writes a status line and headers, ending the head; the caller appends `content_length`
/// bytes of body (or none, for HEAD).
pub fn head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    content_length: usize,
    keep_alive: bool,
    extra: &[(&str, &[u8])],
) {
    status_and_type(out, status, content_type);
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(out, content_length as u64);
    if !keep_alive {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    for (name, value) in extra {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// The status line and the Content-Type header (without its line end).
fn status_and_type(out: &mut Vec<u8>, status: u16, content_type: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
}

/// Writes the head of a chunked response (`Transfer-Encoding: chunked`): its body follows as
/// [`chunk`]s and ends with [`LAST_CHUNK`].
pub fn chunked_head(out: &mut Vec<u8>, status: u16, content_type: &str, keep_alive: bool) {
    status_and_type(out, status, content_type);
    out.extend_from_slice(b"\r\nTransfer-Encoding: chunked");
    if !keep_alive {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends `data` as one chunk of a chunked body (nothing for empty data, which would end it).
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A complete response with a body.
pub fn full(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    extra: &[(&str, &[u8])],
) {
    head(out, status, content_type, body.len(), keep_alive, extra);
    out.extend_from_slice(body);
}

/// A JSON response.
pub fn json(out: &mut Vec<u8>, status: u16, body: &serde_json::Value, keep_alive: bool) {
    // Serialising a `Value` into memory cannot fail.
    let body = serde_json::to_vec(body).unwrap_or_default();
    full(out, status, JSON, &body, keep_alive, &[]);
}

/// `{"error": "<message>"}` with the error's status (and `Allow` on every 405,
/// `WWW-Authenticate: Bearer` on every 401).
pub fn error(out: &mut Vec<u8>, error: &Error, keep_alive: bool) {
    let body = serde_json::json!({ "error": error.to_string() });
    // Serialising a `Value` into memory cannot fail.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let keep_alive = keep_alive && !error.closes_connection();
    // The headers an error's status calls for: what a 405 allows, the scheme a 401 asks for.
    let extra: &[(&str, &[u8])] = match error {
        Error::MethodNotAllowed { allow } | Error::ReadOnly { allow } => &[("Allow", allow.as_bytes())],
        Error::Unauthorized(_) => &[("WWW-Authenticate", b"Bearer")],
        _ => &[],
    };
    full(out, error.status(), JSON, &body, keep_alive, extra);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits_are_exact() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn every_status_the_server_answers_has_its_reason_phrase() {
        for status in [
            100, 200, 201, 206, 400, 404, 405, 408, 409, 411, 412, 413, 414, 431, 501, 503, 505, 507,
        ] {
            assert_ne!(reason(status), "Unknown", "{status}");
        }
        assert_eq!((reason(409), reason(412)), ("Conflict", "Precondition Failed"));
    }

    #[test]
    fn head_and_body_are_well_formed() {
        let mut out = Vec::new();
        full(&mut out, 201, JSON, b"{}", false, &[("X-TTL-Ms", b"5")]);
        assert_eq!(
            out,
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\nX-TTL-Ms: 5\r\n\r\n{}"
        );
    }

    #[test]
    fn errors_are_json_with_allow_on_405() {
        let mut out = Vec::new();
        error(&mut out, &Error::MethodNotAllowed { allow: "GET, PUT" }, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET, PUT\r\n"));
        assert!(text.ends_with(r#"{"error":"method not allowed here; allowed: GET, PUT"}"#));
        let mut out = Vec::new();
        error(&mut out, &Error::ReadOnly { allow: "" }, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 "), "{text}");
        assert!(
            text.contains("\r\nAllow: \r\n"),
            "a read-only write route allows nothing: {text}"
        );
        let mut out = Vec::new();
        error(&mut out, &Error::Unauthorized("unknown token"), true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("\r\nWWW-Authenticate: Bearer\r\n"), "{text}");
        let mut out = Vec::new();
        error(&mut out, &Error::LengthRequired, true);
        assert!(
            String::from_utf8(out).unwrap().contains("Connection: close"),
            "411 closes"
        );
    }
}
