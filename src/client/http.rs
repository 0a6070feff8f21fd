//! A minimal synchronous HTTP/1.1 client: one request per TCP connection, `Connection: close`.
//!
//! Owns the bytes on the wire: resolving `--addr`, encoding one request, and parsing exactly one
//! response with every length bounded. It never interprets a status code (that is
//! [`super::commands`]' job) and never panics on what a peer sends: a malformed, truncated or
//! oversized response is an error like any other.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::error::{ClientError, Phase};

/// Largest response body accepted, in bytes. A server caps values far lower
/// ([`crate::limits::VALUE_BYTES_MAX_CEILING`]); this only stops a broken or hostile peer from
/// making the client buffer without end.
pub const RESPONSE_BODY_BYTES_MAX: u64 = 1 << 30;
/// Largest response head (status line and headers), in bytes.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 64 << 10;
/// Most header lines in one response.
pub const RESPONSE_HEADERS_COUNT_MAX: usize = 100;
/// Most interim (1xx) responses skipped before the final one.
pub const INTERIM_RESPONSES_MAX: usize = 8;
/// Longest chunk-size line (hex size plus extensions) or trailer line of a chunked body, in bytes.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;
/// Most trailer lines after the last chunk.
pub const CHUNK_TRAILERS_COUNT_MAX: usize = 100;

/// Where requests go and how long any one step may stall.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `HOST:PORT` as the user gave it; resolved per request and sent as the `Host` header.
    pub addr: String,
    /// Bound on connecting and on each read or write (not on the whole exchange, so that a
    /// large value moving steadily never times out).
    pub timeout_ms: u64,
}

/// One request. The body, when there is one, is sent with a `Content-Length`.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET`, `PUT`, `PATCH`, `DELETE`.
    pub method: &'static str,
    /// Path and query, already percent-encoded, e.g. `/v1/keys/a%2Fb?ttl_ms=5`.
    pub target: String,
    /// `Content-Type` to declare for the body.
    pub content_type: Option<&'static str>,
    /// The body; `None` sends no `Content-Length` at all (GET, DELETE).
    pub body: Option<&'a [u8]>,
}

/// A parsed final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status (200..=599).
    pub status: u16,
    /// Header names lower-cased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (give it lower-cased).
    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum ParseError {
    /// The socket failed (including timeouts).
    Io(io::Error),
    /// The bytes are not an HTTP/1.x response we accept; says what was wrong.
    Malformed(String),
}

impl From<io::Error> for ParseError {
    fn from(error: io::Error) -> Self {
        // A peer that closes mid-response is a truncated response, not a socket failure.
        if error.kind() == io::ErrorKind::UnexpectedEof {
            ParseError::Malformed("the connection closed before the response was complete".into())
        } else {
            ParseError::Io(error)
        }
    }
}

impl Endpoint {
    /// Sends `request` on a fresh connection and reads the one response.
    pub fn send(&self, request: &Request<'_>) -> Result<Response, ClientError> {
        let mut stream = self.connect()?;
        let head = encode_head(&self.addr, request);
        let written = stream
            .write_all(&head)
            .and_then(|()| stream.write_all(request.body.unwrap_or_default()))
            .and_then(|()| stream.flush());
        let mut reader = BufReader::new(stream);
        if let Err(error) = written {
            // A server may answer (413, 408) and close before taking the whole body: when that
            // answer is already in our receive buffer, it explains more than the broken write.
            if !is_timeout(&error)
                && let Ok(response) = parse_response(&mut reader)
            {
                return Ok(response);
            }
            return Err(self.io_error(error, Phase::Sending));
        }
        parse_response(&mut reader).map_err(|error| match error {
            ParseError::Io(error) => self.io_error(error, Phase::Receiving),
            ParseError::Malformed(reason) => ClientError::BadResponse {
                addr: self.addr.clone(),
                reason,
            },
        })
    }

    /// Resolves `addr` and connects to the first address that accepts, within the timeout each.
    fn connect(&self) -> Result<TcpStream, ClientError> {
        let resolve_error = |source| ClientError::Resolve {
            addr: self.addr.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = self.addr.as_str().to_socket_addrs().map_err(resolve_error)?.collect();
        if addrs.is_empty() {
            return Err(resolve_error(io::Error::other("the name has no addresses")));
        }
        let timeout = Duration::from_millis(self.timeout_ms);
        let mut last_error = None;
        for socket_addr in &addrs {
            match TcpStream::connect_timeout(socket_addr, timeout) {
                Ok(stream) => {
                    // These fail only for a zero timeout (ruled out by the flag's range) or a
                    // socket already dead, which the first write would report anyway.
                    let configured = stream
                        .set_read_timeout(Some(timeout))
                        .and_then(|()| stream.set_write_timeout(Some(timeout)))
                        // The head and body go out as two writes; without this, Nagle would hold
                        // the body back until the head is acknowledged (a delayed-ACK stall).
                        .and_then(|()| stream.set_nodelay(true));
                    return match configured {
                        Ok(()) => Ok(stream),
                        Err(error) => Err(self.io_error(error, Phase::Connecting)),
                    };
                }
                Err(error) => last_error = Some(error),
            }
        }
        let error =
            last_error.expect("`addrs` is not empty, so the loop ran and every pass that did not return set it");
        Err(self.io_error(error, Phase::Connecting))
    }

    /// Classifies a socket error: a timeout, a failure to connect, or a connection lost.
    fn io_error(&self, source: io::Error, phase: Phase) -> ClientError {
        let addr = self.addr.clone();
        if is_timeout(&source) {
            ClientError::Timeout {
                addr,
                timeout_ms: self.timeout_ms,
                phase,
            }
        } else if phase == Phase::Connecting {
            ClientError::Connect { addr, source }
        } else {
            ClientError::ConnectionLost { addr, phase, source }
        }
    }
}

/// True for the errors a socket timeout produces (Linux reports `EAGAIN` for `SO_RCVTIMEO`).
fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

/// The request line and headers, ending with the blank line.
pub fn encode_head(host: &str, request: &Request<'_>) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: corekv/{}\r\nConnection: close\r\n",
        request.method,
        request.target,
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(content_type) = request.content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some(body) = request.body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Percent-encodes every byte except RFC 3986's unreserved `A-Z a-z 0-9 - . _ ~`, so any key
/// (slashes, spaces, `?`, `%`, non-UTF-8 bytes) lands in one path segment unchanged.
pub fn percent_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 3);
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0x0f)] as char);
        }
    }
    out
}

/// Reads one final response: skips interim 1xx responses, then decodes the body framed by
/// `Transfer-Encoding: chunked`, `Content-Length`, or the end of the connection.
pub fn parse_response<R: BufRead>(reader: &mut R) -> Result<Response, ParseError> {
    for _ in 0..=INTERIM_RESPONSES_MAX {
        let (status, headers) = parse_head(reader)?;
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(ParseError::Malformed(
                    "the server switched protocols (101) unasked".into(),
                ));
            }
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else {
            read_body(reader, &headers)?
        };
        return Ok(Response { status, headers, body });
    }
    Err(ParseError::Malformed(format!(
        "more than {INTERIM_RESPONSES_MAX} interim (1xx) responses"
    )))
}

/// Reads the status line and headers of one response.
fn parse_head<R: BufRead>(reader: &mut R) -> Result<(u16, Vec<(String, String)>), ParseError> {
    let mut head_bytes_left = RESPONSE_HEAD_BYTES_MAX;
    let status_line = match read_line(reader, &mut head_bytes_left)? {
        Some(line) => line,
        None => {
            return Err(ParseError::Malformed(
                "the server closed the connection without answering".into(),
            ));
        }
    };
    let status = parse_status_line(&status_line)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut head_bytes_left)?
            .ok_or_else(|| ParseError::Malformed("the connection closed inside the response headers".into()))?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        if headers.len() == RESPONSE_HEADERS_COUNT_MAX {
            return Err(ParseError::Malformed(format!(
                "more than {RESPONSE_HEADERS_COUNT_MAX} headers"
            )));
        }
        headers.push(parse_header_line(&line)?);
    }
}

/// `HTTP/1.x SSS reason` into the status code.
fn parse_status_line(line: &[u8]) -> Result<u16, ParseError> {
    let malformed = || ParseError::Malformed(format!("not an HTTP/1.x status line: {:?}", snippet(line)));
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(malformed)?;
    // `1.0` or `1.1`, a space, three digits, then the end or a space and a reason phrase.
    let [minor, b' ', d1, d2, d3, tail @ ..] = rest else {
        return Err(malformed());
    };
    if !minor.is_ascii_digit() || ![d1, d2, d3].iter().all(|d| d.is_ascii_digit()) {
        return Err(malformed());
    }
    if !(tail.is_empty() || tail[0] == b' ') {
        return Err(malformed());
    }
    let status = u16::from(d1 - b'0') * 100 + u16::from(d2 - b'0') * 10 + u16::from(d3 - b'0');
    if !(100..=599).contains(&status) {
        return Err(malformed());
    }
    Ok(status)
}

/// `Name: value` into a lower-cased name and a trimmed value.
fn parse_header_line(line: &[u8]) -> Result<(String, String), ParseError> {
    let malformed = || ParseError::Malformed(format!("bad header line: {:?}", snippet(line)));
    // A leading space would be an obsolete folded continuation line; RFC 9112 lets us reject it.
    let colon = line.iter().position(|&b| b == b':').ok_or_else(malformed)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let is_token = |b: &u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(b);
    if name.is_empty() || !name.iter().all(is_token) {
        return Err(malformed());
    }
    // Names are ASCII by the check above; values may carry obs-text, kept lossily: only the
    // framing headers are ever looked at, and those are ASCII or malformed.
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let value = String::from_utf8_lossy(value).trim_matches([' ', '\t']).to_string();
    Ok((name, value))
}

/// Reads the body as the headers frame it.
fn read_body<R: BufRead>(reader: &mut R, headers: &[(String, String)]) -> Result<Vec<u8>, ParseError> {
    let codings: Vec<String> = header_values(headers, "transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| !coding.is_empty())
        .collect();
    if let Some(last) = codings.last() {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3). Only `chunked` is decoded:
        // the client never offers compression, so any other coding is a server bug.
        if last != "chunked" || codings.len() > 1 {
            return Err(ParseError::Malformed(format!(
                "unsupported transfer coding `{}`",
                codings.join(", ")
            )));
        }
        return read_chunked(reader);
    }
    let mut length = None;
    for value in header_values(headers, "content-length").flat_map(|v| v.split(',')) {
        let value = value.trim();
        let parsed = match value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
            true => value.parse::<u64>().ok(),
            false => None,
        };
        let Some(parsed) = parsed else {
            return Err(ParseError::Malformed(format!("bad Content-Length {value:?}")));
        };
        if length.is_some_and(|length| length != parsed) {
            return Err(ParseError::Malformed("conflicting Content-Length headers".into()));
        }
        length = Some(parsed);
    }
    match length {
        Some(length) => read_exact_body(reader, length),
        None => read_to_end_bounded(reader),
    }
}

/// Every value of the header `name` (lower-cased), in order.
fn header_values<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Reads exactly `length` bytes, refusing lengths over the bound before reading any.
fn read_exact_body<R: BufRead>(reader: &mut R, length: u64) -> Result<Vec<u8>, ParseError> {
    if length > RESPONSE_BODY_BYTES_MAX {
        return Err(too_large());
    }
    // Grow as bytes arrive rather than trusting the header with one big allocation up front.
    let mut body = Vec::with_capacity(length.min(1 << 20) as usize);
    reader.by_ref().take(length).read_to_end(&mut body)?;
    if (body.len() as u64) < length {
        return Err(ParseError::Malformed(format!(
            "the connection closed after {} of {length} body bytes",
            body.len()
        )));
    }
    Ok(body)
}

/// Reads until the peer closes, up to the bound.
fn read_to_end_bounded<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, ParseError> {
    let mut body = Vec::new();
    reader
        .by_ref()
        .take(RESPONSE_BODY_BYTES_MAX + 1)
        .read_to_end(&mut body)?;
    if body.len() as u64 > RESPONSE_BODY_BYTES_MAX {
        return Err(too_large());
    }
    Ok(body)
}

/// Decodes a chunked body: `hex-size[;ext]CRLF data CRLF` ... `0CRLF [trailers] CRLF`.
fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, ParseError> {
    let truncated = || ParseError::Malformed("the connection closed inside a chunked body".into());
    let mut body = Vec::new();
    loop {
        let mut line_bytes_left = CHUNK_LINE_BYTES_MAX;
        let line = read_line(reader, &mut line_bytes_left)?.ok_or_else(truncated)?;
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = size_text.trim_ascii();
        // from_str_radix would also take a leading `+`; a chunk size is hex digits only.
        if size_text.is_empty() || size_text.len() > 15 || !size_text.iter().all(u8::is_ascii_hexdigit) {
            return Err(ParseError::Malformed(format!(
                "bad chunk size line {:?}",
                snippet(&line)
            )));
        }
        // Hex digits only and at most 15 of them, so this is valid UTF-8 and fits in a u64.
        let size = u64::from_str_radix(std::str::from_utf8(size_text).expect("hex digits are ASCII"), 16)
            .expect("at most 15 hex digits fit in a u64");
        if size == 0 {
            // Trailers carry nothing the client needs; read past them to the final blank line.
            for _ in 0..=CHUNK_TRAILERS_COUNT_MAX {
                let mut line_bytes_left = CHUNK_LINE_BYTES_MAX;
                if read_line(reader, &mut line_bytes_left)?
                    .ok_or_else(truncated)?
                    .is_empty()
                {
                    return Ok(body);
                }
            }
            return Err(ParseError::Malformed(format!(
                "more than {CHUNK_TRAILERS_COUNT_MAX} trailer lines"
            )));
        }
        if body.len() as u64 + size > RESPONSE_BODY_BYTES_MAX {
            return Err(too_large());
        }
        let before = body.len();
        reader.by_ref().take(size).read_to_end(&mut body)?;
        if ((body.len() - before) as u64) < size {
            return Err(truncated());
        }
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(ParseError::Malformed("chunk data not followed by CRLF".into()));
        }
    }
}

/// Reads one line ending in LF (CR before it dropped), charging its bytes to `bytes_left`.
/// `Ok(None)` means EOF before any byte; EOF mid-line is a truncated response.
fn read_line<R: BufRead>(reader: &mut R, bytes_left: &mut usize) -> Result<Option<Vec<u8>>, ParseError> {
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        };
        if available.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(ParseError::Malformed(
                "the connection closed in the middle of a line".into(),
            ));
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        if taken > *bytes_left {
            return Err(ParseError::Malformed("the response head is too large".into()));
        }
        *bytes_left -= taken;
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if done {
            line.pop(); // the LF, known present since `done`
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

fn too_large() -> ParseError {
    ParseError::Malformed(format!("the body is larger than {RESPONSE_BODY_BYTES_MAX} bytes"))
}

/// The start of some bytes, as text for an error message.
fn snippet(bytes: &[u8]) -> String {
    const SNIPPET_BYTES_MAX: usize = 60;
    String::from_utf8_lossy(&bytes[..bytes.len().min(SNIPPET_BYTES_MAX)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Response, ParseError> {
        parse_response(&mut io::Cursor::new(bytes))
    }

    fn malformed(bytes: &[u8]) -> String {
        match parse(bytes) {
            Err(ParseError::Malformed(reason)) => reason,
            other => panic!(
                "expected Malformed for {:?}, got {other:?}",
                String::from_utf8_lossy(bytes)
            ),
        }
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(percent_encode(b"AZaz09-._~"), "AZaz09-._~");
        assert_eq!(percent_encode(b"a/b c"), "a%2Fb%20c");
        assert_eq!(percent_encode(b"?#%+&="), "%3F%23%25%2B%26%3D");
        assert_eq!(percent_encode(b"\x00\xff\n"), "%00%FF%0A");
        assert_eq!(percent_encode("é".as_bytes()), "%C3%A9");
        assert_eq!(percent_encode(b""), "");
    }

    #[test]
    fn head_carries_host_close_and_length_only_with_a_body() {
        let get = Request {
            method: "GET",
            target: "/v1/keys/k".into(),
            content_type: None,
            body: None,
        };
        let head = String::from_utf8(encode_head("h:1", &get)).unwrap();
        assert!(head.starts_with("GET /v1/keys/k HTTP/1.1\r\nHost: h:1\r\n"), "{head}");
        assert!(head.contains("Connection: close\r\n"));
        assert!(!head.contains("Content-Length"));
        assert!(head.ends_with("\r\n\r\n"));

        let put = Request {
            method: "PUT",
            target: "/v1/keys/k".into(),
            content_type: Some("application/octet-stream"),
            body: Some(b""),
        };
        let head = String::from_utf8(encode_head("h:1", &put)).unwrap();
        assert!(
            head.contains("Content-Length: 0\r\n"),
            "an empty value still says its length"
        );
        assert!(head.contains("Content-Type: application/octet-stream\r\n"));
    }

    #[test]
    fn parses_a_content_length_response() {
        let response = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhelloEXTRA").unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"hello");
        assert_eq!(response.header("x-a"), Some("b"));
        assert_eq!(response.header("content-length"), Some("5"));
    }

    #[test]
    fn parses_binary_bodies_and_bare_lf_lines() {
        let mut bytes = b"HTTP/1.0 404\nContent-Length: 3\n\n".to_vec();
        bytes.extend_from_slice(b"\x00\r\n");
        let response = parse(&bytes).unwrap();
        assert_eq!(response.status, 404);
        assert_eq!(response.body, b"\x00\r\n");
    }

    #[test]
    fn reads_to_eof_without_framing_headers() {
        let response = parse(b"HTTP/1.1 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(response.body, b"all of it");
    }

    #[test]
    fn no_body_for_204_and_304() {
        assert_eq!(parse(b"HTTP/1.1 204 No Content\r\n\r\nignored").unwrap().body, b"");
        assert_eq!(
            parse(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n")
                .unwrap()
                .body,
            b""
        );
    }

    #[test]
    fn skips_interim_responses() {
        let response =
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(response.status, 201);
        let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(INTERIM_RESPONSES_MAX + 1);
        assert!(malformed(&many).contains("interim"));
        assert!(malformed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").contains("101"));
    }

    #[test]
    fn decodes_chunked_bodies() {
        let response = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
              5;ext=1\r\nhello\r\nA\r\n, chunked!\r\n0\r\nTrailer: x\r\n\r\nNEXT",
        )
        .unwrap();
        assert_eq!(response.body, b"hello, chunked!", "chunked wins over Content-Length");
        let empty = parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n").unwrap();
        assert_eq!(empty.body, b"");
    }

    #[test]
    fn rejects_bad_chunked_bodies() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let with = |rest: &[u8]| [head.as_slice(), rest].concat();
        assert!(malformed(&with(b"5\r\nhel")).contains("closed"), "truncated data");
        assert!(malformed(&with(b"5\r\nhello\r\n")).contains("closed"), "no last chunk");
        assert!(
            malformed(&with(b"5\r\nhello\r\n0\r\n")).contains("closed"),
            "no final CRLF"
        );
        assert!(malformed(&with(b"+5\r\nhello\r\n0\r\n\r\n")).contains("chunk size"));
        assert!(malformed(&with(b"zz\r\n")).contains("chunk size"));
        assert!(malformed(&with(b"\r\n")).contains("chunk size"));
        assert!(malformed(&with(b"fffffffffffffffff\r\n")).contains("chunk size"));
        assert!(malformed(&with(b"5\r\nhelloXX0\r\n\r\n")).contains("CRLF"));
        assert!(malformed(&with(b"ffffffffff\r\n")).contains("larger"));
        let gzip = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert!(malformed(gzip).contains("transfer coding"));
    }

    #[test]
    fn rejects_truncated_responses() {
        assert!(malformed(b"").contains("without answering"));
        assert!(malformed(b"HTTP/1.1 200 OK").contains("middle of a line"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n").contains("headers"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel").contains("3 of 5"));
    }

    #[test]
    fn rejects_garbage() {
        for garbage in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 600 High\r\n\r\n",
            b"HTTP/1.1 -12 OK\r\n\r\n",
            b"\x00\xff\xfe\r\n",
        ] {
            assert!(malformed(garbage).contains("status line"), "{garbage:?}");
        }
        assert!(malformed(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").contains("header"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n").contains("header"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n").contains("header"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").contains("Content-Length"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx").contains("Content-Length"));
        assert!(
            malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx").contains("conflicting")
        );
        assert!(
            malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n").contains("Content-Length")
        );
    }

    #[test]
    fn bounds_what_it_reads() {
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            RESPONSE_BODY_BYTES_MAX + 1
        );
        assert!(malformed(huge.as_bytes()).contains("larger"));
        let long_header = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(RESPONSE_HEAD_BYTES_MAX));
        assert!(malformed(long_header.as_bytes()).contains("too large"));
        let many_headers = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: y\r\n".repeat(RESPONSE_HEADERS_COUNT_MAX + 1)
        );
        assert!(malformed(many_headers.as_bytes()).contains("headers"));
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        let many_trailers = [head, b"T: x\r\n".repeat(CHUNK_TRAILERS_COUNT_MAX + 1), b"\r\n".to_vec()].concat();
        assert!(malformed(&many_trailers).contains("trailer"));
    }

    #[test]
    fn a_refused_connection_is_a_connect_error() {
        // Bind then drop a listener, so the port was free a moment ago and nothing listens now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = Endpoint {
            addr: format!("127.0.0.1:{port}"),
            timeout_ms: 2000,
        };
        let request = Request {
            method: "GET",
            target: "/v1/ping".into(),
            content_type: None,
            body: None,
        };
        let error = endpoint.send(&request).unwrap_err();
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
        assert_eq!(error.exit_code(), crate::client::EXIT_CONNECT);
    }

    #[test]
    fn a_silent_server_is_a_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint {
            addr: listener.local_addr().unwrap().to_string(),
            timeout_ms: 100,
        };
        let request = Request {
            method: "GET",
            target: "/v1/ping".into(),
            content_type: None,
            body: None,
        };
        // The kernel completes the handshake from the backlog; nobody ever answers.
        let error = endpoint.send(&request).unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::Timeout {
                    phase: Phase::Receiving,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.exit_code(), crate::client::EXIT_TIMEOUT);
    }

    #[test]
    fn a_real_socket_round_trip_sends_the_body() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut request = Vec::new();
            // Head, then the 3-byte body announced by the client.
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                reader.read_exact(&mut byte).unwrap();
                request.push(byte[0]);
            }
            let mut body = [0u8; 3];
            reader.read_exact(&mut body).unwrap();
            reader
                .get_mut()
                .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            (String::from_utf8(request).unwrap(), body)
        });
        let endpoint = Endpoint { addr, timeout_ms: 5000 };
        let request = Request {
            method: "PUT",
            target: "/v1/keys/a%2Fb".into(),
            content_type: None,
            body: Some(b"\x00\x01\x02"),
        };
        let response = endpoint.send(&request).unwrap();
        assert_eq!((response.status, response.body.as_slice()), (201, &b"ok"[..]));
        let (head, body) = server.join().unwrap();
        assert!(head.starts_with("PUT /v1/keys/a%2Fb HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Content-Length: 3\r\n"));
        assert_eq!(body, [0, 1, 2]);
    }
}
