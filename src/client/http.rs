//! A minimal synchronous HTTP/1.1 client: one request per TCP connection, `Connection: close`.
//!
//! Owns the bytes on the wire: resolving `--addr`, encoding one request, and reading one
//! response ([`read_response`], on httparse) with every length bounded. The integration tests'
//! helper reads the server's responses with the same [`read_response`], so corekv has one
//! response reader. It never interprets a status code (that is the client commands' job) and
//! never panics on what a peer sends: a malformed, truncated or oversized response is an error
//! like any other.

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
/// Longest chunk-size line (hex size plus extensions) of a chunked body, in bytes.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;
/// Most trailer lines after the last chunk.
pub const CHUNK_TRAILERS_COUNT_MAX: usize = 100;
/// Largest trailer section after the last chunk, in bytes.
pub const CHUNK_TRAILERS_BYTES_MAX: usize = 64 << 10;

/// Where requests go and how long any one step may stall.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `HOST:PORT` as the user gave it; resolved per request and sent as the `Host` header.
    pub addr: String,
    /// Bound on connecting and on each read or write (not on the whole exchange, so that a
    /// large value moving steadily never times out).
    pub timeout_ms: u64,
    /// Sent as `Authorization: Bearer TOKEN` when present; never part of an error message.
    pub token: Option<String>,
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
    /// A precondition header (`If-Match`, `If-None-Match`) and its value, for a conditional write.
    pub precondition: Option<(&'static str, String)>,
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
    /// The first header of that name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
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

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Io(error) => write!(f, "reading the response failed: {error}"),
            ParseError::Malformed(reason) => write!(f, "bad response: {reason}"),
        }
    }
}

impl std::error::Error for ParseError {}

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
        let head = encode_head(&self.addr, self.token.as_deref(), request);
        let written = stream
            .write_all(&head)
            .and_then(|()| stream.write_all(request.body.unwrap_or_default()))
            .and_then(|()| stream.flush());
        let mut reader = BufReader::new(stream);
        if let Err(error) = written {
            // A server may answer (413, 408) and close before taking the whole body: when that
            // answer is already in our receive buffer, it explains more than the broken write.
            if !is_timeout(&error)
                && let Ok(response) = read_response(&mut reader, Want::Final)
            {
                return Ok(response);
            }
            return Err(self.io_error(error, Phase::Sending));
        }
        read_response(&mut reader, Want::Final).map_err(|error| match error {
            ParseError::Io(error) => self.io_error(error, Phase::Receiving),
            ParseError::Malformed(reason) => ClientError::BadResponse {
                addr: self.addr.clone(),
                reason,
            },
        })
    }

    /// Sends `request` and reads the response head; a 200 hands back the connection to read
    /// the body as it arrives (an event stream: no read timeout from then on), any other
    /// status the whole response.
    pub fn open_stream(&self, request: &Request<'_>) -> Result<Result<BufReader<TcpStream>, Response>, ClientError> {
        let mut stream = self.connect()?;
        let head = encode_head(&self.addr, self.token.as_deref(), request);
        stream
            .write_all(&head)
            .and_then(|()| stream.flush())
            .map_err(|error| self.io_error(error, Phase::Sending))?;
        let mut reader = BufReader::new(stream);
        let parse_error = |error| match error {
            ParseError::Io(error) => self.io_error(error, Phase::Receiving),
            ParseError::Malformed(reason) => ClientError::BadResponse {
                addr: self.addr.clone(),
                reason,
            },
        };
        let (status, headers) = read_head(&mut reader).map_err(parse_error)?;
        if status != 200 {
            let body = read_body(&mut reader, &headers).map_err(parse_error)?;
            return Ok(Err(Response { status, headers, body }));
        }
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|error| self.io_error(error, Phase::Receiving))?;
        Ok(Ok(reader))
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

/// The request line and headers, ending with the blank line. `host` and `token` were checked
/// for spaces and control characters when the command line was parsed.
pub fn encode_head(host: &str, token: Option<&str>, request: &Request<'_>) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: corekv/{}\r\nConnection: close\r\n",
        request.method,
        request.target,
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(content_type) = request.content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some((name, value)) = &request.precondition {
        head.push_str(&format!("{name}: {value}\r\n"));
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

/// Which response [`read_response`] reads, and whether it may carry a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The final response to a request other than HEAD: interim (1xx) responses are skipped.
    Final,
    /// The final response to a HEAD request: no body, whatever its headers announce.
    FinalToHead,
    /// The next response as it comes, interim or final (to see a `100 Continue`).
    Next,
}

/// Reads one response from `reader`, consuming exactly its bytes (so the next response on a
/// keep-alive connection stays in the reader). The head is parsed by httparse; the body is
/// framed by `Transfer-Encoding: chunked`, `Content-Length`, or the end of the connection.
pub fn read_response<R: BufRead>(reader: &mut R, want: Want) -> Result<Response, ParseError> {
    for _ in 0..=INTERIM_RESPONSES_MAX {
        let (status, headers) = read_head(reader)?;
        let interim = (100..200).contains(&status);
        if interim && status == 101 {
            return Err(ParseError::Malformed(
                "the server switched protocols (101) unasked".into(),
            ));
        }
        if interim && want != Want::Next {
            continue;
        }
        let bodiless = interim || want == Want::FinalToHead || status == 204 || status == 304;
        let body = if bodiless {
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

/// Reads the status line and headers of one response, at most [`RESPONSE_HEAD_BYTES_MAX`]
/// bytes and [`RESPONSE_HEADERS_COUNT_MAX`] headers of them.
fn read_head<R: BufRead>(reader: &mut R) -> Result<(u16, Vec<(String, String)>), ParseError> {
    let closed = |so_far: &[u8]| {
        ParseError::Malformed(if so_far.is_empty() {
            "the server closed the connection without answering".into()
        } else {
            "the connection closed inside the response headers".into()
        })
    };
    let too_large = || {
        ParseError::Malformed(format!(
            "the response head is larger than {RESPONSE_HEAD_BYTES_MAX} bytes"
        ))
    };
    read_until_complete(reader, RESPONSE_HEAD_BYTES_MAX, closed, too_large, |bytes| {
        let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_COUNT_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let head_bytes = match response.parse(bytes) {
            Ok(httparse::Status::Complete(head_bytes)) => head_bytes,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ParseError::Malformed(format!(
                    "more than {RESPONSE_HEADERS_COUNT_MAX} headers"
                )));
            }
            Err(error) => {
                return Err(ParseError::Malformed(format!(
                    "not an HTTP/1.x response ({error}): {:?}",
                    snippet(bytes)
                )));
            }
        };
        // Complete means httparse found the status code; it takes any three digits.
        let status = response.code.expect("a complete response head has a status code");
        if !(100..=599).contains(&status) {
            return Err(ParseError::Malformed(format!("status {status} is outside 100-599")));
        }
        let headers = response
            .headers
            .iter()
            .map(|header| {
                // Values may carry obs-text, kept lossily: only the framing headers are ever
                // looked at, and those are ASCII or malformed.
                let value = String::from_utf8_lossy(header.value)
                    .trim_matches([' ', '\t'])
                    .to_string();
                (header.name.to_ascii_lowercase(), value)
            })
            .collect();
        Ok(Some((head_bytes, (status, headers))))
    })
}

/// Feeds `parse` ever more of `reader`'s bytes, at most `bytes_max`, until it returns
/// `Some((used, value))`; consumes exactly `used` bytes and returns `value`. `closed` names a
/// connection closed early (given the bytes read so far), `too_large` an overlong item.
/// `parse` must be prefix-monotone (httparse's parsers are): once some bytes parse, every
/// longer input parses to the same length.
fn read_until_complete<R: BufRead, T>(
    reader: &mut R,
    bytes_max: usize,
    closed: impl Fn(&[u8]) -> ParseError,
    too_large: impl Fn() -> ParseError,
    mut parse: impl FnMut(&[u8]) -> Result<Option<(usize, T)>, ParseError>,
) -> Result<T, ParseError> {
    let mut bytes = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        };
        if available.is_empty() {
            return Err(closed(&bytes));
        }
        let before = bytes.len();
        let taken = available.len().min(bytes_max - before);
        bytes.extend_from_slice(&available[..taken]);
        match parse(&bytes)? {
            Some((used, value)) => {
                // The previous, shorter input did not parse, so `used` reaches into the new bytes.
                debug_assert!(used > before && used <= bytes.len());
                reader.consume(used - before);
                return Ok(value);
            }
            None if bytes.len() == bytes_max => return Err(too_large()),
            None => reader.consume(taken),
        }
    }
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

/// Decodes a chunked body: `hex-size[;ext]CRLF data CRLF` ... `0CRLF [trailers] CRLF`. Sizes
/// are parsed by `httparse::parse_chunk_size`, trailers by `httparse::parse_headers`.
fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, ParseError> {
    let closed = |_: &[u8]| ParseError::Malformed("the connection closed inside a chunked body".into());
    let mut body = Vec::new();
    loop {
        let line_too_long =
            || ParseError::Malformed(format!("a chunk size line is longer than {CHUNK_LINE_BYTES_MAX} bytes"));
        let size = read_until_complete(reader, CHUNK_LINE_BYTES_MAX, closed, line_too_long, |bytes| {
            let bad = || ParseError::Malformed(format!("bad chunk size line {:?}", snippet(bytes)));
            // httparse reads an empty size as 0; a chunk size needs at least one hex digit.
            if !bytes[0].is_ascii_hexdigit() {
                return Err(bad());
            }
            match httparse::parse_chunk_size(bytes) {
                Ok(httparse::Status::Complete((used, size))) => Ok(Some((used, size))),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(httparse::InvalidChunkSize) => Err(bad()),
            }
        })?;
        if size == 0 {
            return read_trailers(reader).map(|()| body);
        }
        if body.len() as u64 + size > RESPONSE_BODY_BYTES_MAX {
            return Err(too_large());
        }
        let before = body.len();
        reader.by_ref().take(size).read_to_end(&mut body)?;
        if ((body.len() - before) as u64) < size {
            return Err(closed(&[]));
        }
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(ParseError::Malformed("chunk data not followed by CRLF".into()));
        }
    }
}

/// Reads past the trailer section after the last chunk (the client needs nothing in it), at
/// most [`CHUNK_TRAILERS_COUNT_MAX`] lines and [`CHUNK_TRAILERS_BYTES_MAX`] bytes.
fn read_trailers<R: BufRead>(reader: &mut R) -> Result<(), ParseError> {
    let closed = |_: &[u8]| ParseError::Malformed("the connection closed inside a chunked body".into());
    let too_large = || ParseError::Malformed(format!("the trailers are larger than {CHUNK_TRAILERS_BYTES_MAX} bytes"));
    read_until_complete(reader, CHUNK_TRAILERS_BYTES_MAX, closed, too_large, |bytes| {
        let mut trailers = [httparse::EMPTY_HEADER; CHUNK_TRAILERS_COUNT_MAX];
        match httparse::parse_headers(bytes, &mut trailers) {
            Ok(httparse::Status::Complete((used, _))) => Ok(Some((used, ()))),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(httparse::Error::TooManyHeaders) => Err(ParseError::Malformed(format!(
                "more than {CHUNK_TRAILERS_COUNT_MAX} trailer lines"
            ))),
            Err(error) => Err(ParseError::Malformed(format!("bad trailer ({error})"))),
        }
    })
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
        read_response(&mut io::Cursor::new(bytes), Want::Final)
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
            precondition: None,
        };
        let head = String::from_utf8(encode_head("h:1", None, &get)).unwrap();
        assert!(head.starts_with("GET /v1/keys/k HTTP/1.1\r\nHost: h:1\r\n"), "{head}");
        assert!(head.contains("Connection: close\r\n"));
        assert!(!head.contains("Content-Length"));
        assert!(!head.contains("Authorization"), "no token, no header");
        assert!(head.ends_with("\r\n\r\n"));

        let put = Request {
            method: "PUT",
            target: "/v1/keys/k".into(),
            content_type: Some("application/octet-stream"),
            body: Some(b""),
            precondition: None,
        };
        let head = String::from_utf8(encode_head("h:1", Some("s3cr3t"), &put)).unwrap();
        assert!(head.contains("Authorization: Bearer s3cr3t\r\n"), "{head}");
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
    fn reads_exactly_one_response_of_a_keep_alive_stream() {
        // A 1-byte buffer makes every head, chunk line and trailer arrive one byte at a time.
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\
                      Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nT: 1\r\n\r\nHTTP/1.1 404 Not Found\r\n\
                      Content-Length: 0\r\n\r\n";
        for capacity in [1, 7, 4096] {
            let mut reader = BufReader::with_capacity(capacity, &bytes[..]);
            let first = read_response(&mut reader, Want::Final).unwrap();
            assert_eq!(
                (first.status, first.body.as_slice()),
                (200, &b"ok"[..]),
                "capacity {capacity}"
            );
            let second = read_response(&mut reader, Want::Final).unwrap();
            assert_eq!(second.body, b"ab", "capacity {capacity}");
            assert_eq!(read_response(&mut reader, Want::Final).unwrap().status, 404);
            assert!(malformed_from(&mut reader).contains("without answering"));
        }
    }

    fn malformed_from<R: BufRead>(reader: &mut R) -> String {
        match read_response(reader, Want::Final) {
            Err(ParseError::Malformed(reason)) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn next_returns_interim_responses_and_head_responses_have_no_body() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        let mut reader = io::Cursor::new(&bytes[..]);
        assert_eq!(read_response(&mut reader, Want::Next).unwrap().status, 100);
        assert_eq!(read_response(&mut reader, Want::Next).unwrap().status, 201);
        let mut head =
            io::Cursor::new(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"[..]);
        let response = read_response(&mut head, Want::FinalToHead).unwrap();
        assert_eq!((response.status, response.header("CONTENT-LENGTH")), (200, Some("5")));
        assert_eq!(response.body, b"");
        assert_eq!(read_response(&mut head, Want::Final).unwrap().status, 204);
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
        assert!(malformed(b"HTTP/1.1 200 OK").contains("inside the response headers"));
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
            let reason = malformed(garbage);
            assert!(
                reason.contains("HTTP/1.x") || reason.contains("100-599"),
                "{garbage:?}: {reason}"
            );
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
        assert!(malformed(long_header.as_bytes()).contains("head is larger"));
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
            token: None,
        };
        let request = Request {
            method: "GET",
            target: "/v1/ping".into(),
            content_type: None,
            body: None,
            precondition: None,
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
            token: None,
        };
        let request = Request {
            method: "GET",
            target: "/v1/ping".into(),
            content_type: None,
            body: None,
            precondition: None,
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
        let endpoint = Endpoint {
            addr,
            timeout_ms: 5000,
            token: None,
        };
        let request = Request {
            method: "PUT",
            target: "/v1/keys/a%2Fb".into(),
            content_type: None,
            body: Some(b"\x00\x01\x02"),
            precondition: None,
        };
        let response = endpoint.send(&request).unwrap();
        assert_eq!((response.status, response.body.as_slice()), (201, &b"ok"[..]));
        let (head, body) = server.join().unwrap();
        assert!(head.starts_with("PUT /v1/keys/a%2Fb HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Content-Length: 3\r\n"));
        assert_eq!(body, [0, 1, 2]);
    }
}
