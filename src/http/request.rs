//! Parses one request at a time out of a connection's read buffer: head by `httparse`, body by
//! `Content-Length` or `Transfer-Encoding: chunked`, with every limit checked before the bytes
//! are waited for. A [`BodyProgress`] carries a partial request's framing from one call to the
//! next, so each call scans only the bytes that arrived since the last.
//!
//! Owns request framing only. It never reads the socket (the buffer is given) and never
//! decides what a route means; the body limit for a request comes from [`crate::api`].

use std::borrow::Cow;

use crate::error::Error;
use crate::limits::{
    CHUNK_FRAMING_BYTES_MAX, CHUNK_LINE_BYTES_MAX, CHUNK_TRAILER_BYTES_MAX, CHUNKS_PER_BODY_MAX, HEADER_BYTES_MAX,
    HEADERS_COUNT_MAX,
};

/// The methods the API uses; anything else is [`Method::Other`] and gets 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Patch,
    Delete,
    Other,
}

impl Method {
    fn parse(text: &str) -> Method {
        match text {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }

    /// True for methods whose requests must carry a body.
    pub fn needs_body(self) -> bool {
        matches!(self, Method::Put | Method::Post | Method::Patch)
    }
}

/// The largest body a request may have, and how to name the limit in a 413. Every byte of the
/// body on the wire counts, a chunked body's framing (size lines, extensions, CRLFs, trailers)
/// included. `bytes == 0` means the request takes no body at all (every flag's limit is at least
/// 1): then `what` names such requests, for the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    pub bytes: u64,
    pub what: &'static str,
    pub flag: &'static str,
}

impl BodyLimit {
    /// The limit of requests that take no body; `what` names them ("GET, HEAD and DELETE requests").
    pub const fn none(what: &'static str) -> BodyLimit {
        BodyLimit {
            bytes: 0,
            what,
            flag: "",
        }
    }

    /// False for requests that take no body.
    pub fn takes_body(&self) -> bool {
        self.bytes > 0
    }

    /// Most bytes a chunked body may take on the wire: the data limit plus
    /// [`CHUNK_FRAMING_BYTES_MAX`] of framing.
    fn chunked_wire_bytes_max(&self) -> u64 {
        self.bytes.saturating_add(CHUNK_FRAMING_BYTES_MAX)
    }
}

/// What the router needs to know about a request before its body is read.
#[derive(Debug, Clone, Copy)]
pub struct HeadInfo<'b> {
    pub method: Method,
    /// The request target's path, still percent-encoded.
    pub path: &'b str,
    /// The part after `?`, empty when there is none.
    pub query: &'b str,
    /// `Content-Type: application/json`.
    pub json: bool,
    /// The first `Authorization` header's value (checked by [`crate::api::auth`]; never logged).
    pub authorization: Option<&'b [u8]>,
    /// The raw values of `If-Match` and `If-None-Match` (the api reads them as versions).
    pub if_match: Option<&'b [u8]>,
    pub if_none_match: Option<&'b [u8]>,
}

#[cfg(test)]
impl<'b> HeadInfo<'b> {
    /// A head with this method and path and nothing else (no query, no JSON, no headers), for
    /// tests to adjust with `..HeadInfo::of(method, path)`.
    pub fn of(method: Method, path: &'b str) -> HeadInfo<'b> {
        HeadInfo {
            method,
            path,
            query: "",
            json: false,
            authorization: None,
            if_match: None,
            if_none_match: None,
        }
    }
}

/// A complete request.
#[derive(Debug)]
pub struct Request<'b> {
    pub head: HeadInfo<'b>,
    /// Borrowed from the buffer for `Content-Length` bodies; decoded into a copy when chunked.
    pub body: Cow<'b, [u8]>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

/// What the buffer lacks before a request is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// More of the head.
    Head,
    /// More of the body. `total_bytes` is head plus body when known (Content-Length), so the
    /// reader can size its buffer once; `expect_continue` asks for a `100 Continue` first.
    Body {
        total_bytes: Option<usize>,
        expect_continue: bool,
    },
}

/// The result of looking for one request at the start of a buffer.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// A request, and how many bytes of the buffer it used.
    Complete(Request<'b>, usize),
    /// Not all there yet.
    Incomplete(Need),
    /// The request is invalid; answer the error and close the connection.
    Invalid(Error),
}

/// How far [`parse`] got with the request at the start of the buffer, so that the next call,
/// given the same request's bytes plus more, resumes instead of starting over. One per
/// connection; [`parse`] resets it itself whenever it returns anything but `Incomplete`.
#[derive(Debug, Default)]
pub struct BodyProgress {
    /// Set once the head is complete: what the body's framing needs, without re-parsing it.
    head: Option<HeadFraming>,
    /// A chunked body's scan so far.
    chunks: ChunkScan,
}

/// How a request's body is framed, as its head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` bytes (0 when the header is absent).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What a complete head says about the body that follows it.
#[derive(Debug, Clone, Copy)]
struct HeadFraming {
    head_len: usize,
    framing: Framing,
    limit: BodyLimit,
    expect_continue: bool,
}

/// A complete head, parsed.
struct Head<'b> {
    info: HeadInfo<'b>,
    len: usize,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

/// Parses the request at the start of `buf`. `body_limit` maps a request's head to the largest
/// body its route accepts. `progress` is this connection's: when the previous call returned
/// `Incomplete` for the request that still starts `buf`, this call resumes where it stopped.
pub fn parse<'b>(
    buf: &'b [u8],
    progress: &mut BodyProgress,
    body_limit: impl FnOnce(&HeadInfo<'b>) -> BodyLimit,
) -> Parsed<'b> {
    let parsed = parse_resuming(buf, progress, body_limit);
    if !matches!(parsed, Parsed::Incomplete(_)) {
        *progress = BodyProgress::default();
    }
    parsed
}

fn parse_resuming<'b>(
    buf: &'b [u8],
    progress: &mut BodyProgress,
    body_limit: impl FnOnce(&HeadInfo<'b>) -> BodyLimit,
) -> Parsed<'b> {
    let (framing, mut head) = match progress.head {
        // The head was parsed by an earlier call: skip it.
        Some(framing) if framing.head_len <= buf.len() => (framing, None),
        _ => {
            progress.chunks = ChunkScan::default();
            match start_request(buf, body_limit) {
                Ok(Some((framing, head))) => (framing, Some(head)),
                Ok(None) => return Parsed::Incomplete(Need::Head),
                Err(error) => return Parsed::Invalid(error),
            }
        }
    };
    progress.head = Some(framing);
    let (body, body_len) = match body_of(buf, framing, &mut progress.chunks) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Parsed::Incomplete(Need::Body {
                total_bytes: match framing.framing {
                    // At most the limit (1 GiB), so it fits in usize.
                    Framing::Length(length) => Some(framing.head_len + length as usize),
                    Framing::Chunked => None,
                },
                expect_continue: framing.expect_continue,
            });
        }
        Err(error) => return Parsed::Invalid(error),
    };
    if head.is_none() {
        // Resumed: parse the head once more, to borrow its fields from this buffer.
        head = parse_head(buf).ok().flatten();
    }
    match head {
        Some(head) => Parsed::Complete(
            Request {
                head: head.info,
                body,
                keep_alive: head.keep_alive,
            },
            framing.head_len + body_len,
        ),
        // The same bytes parsed before; only a caller passing another request's progress gets here.
        None => Parsed::Invalid(Error::bad_request("request head changed while its body was read")),
    }
}

/// Parses a head and checks its body's framing against its route's limit, before any of the
/// body is waited for. `None` while the head is incomplete.
fn start_request<'b>(
    buf: &'b [u8],
    body_limit: impl FnOnce(&HeadInfo<'b>) -> BodyLimit,
) -> Result<Option<(HeadFraming, Head<'b>)>, Error> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let limit = body_limit(&head.info);
    match head.framing {
        Framing::Chunked | Framing::Length(1..) if !limit.takes_body() => {
            return Err(Error::BodyNotAllowed { what: limit.what });
        }
        Framing::Length(length) if length > limit.bytes => {
            return Err(Error::PayloadTooLarge {
                what: limit.what,
                size: length,
                limit: limit.bytes,
                flag: limit.flag,
            });
        }
        _ => {}
    }
    let framing = HeadFraming {
        head_len: head.len,
        framing: head.framing,
        limit,
        expect_continue: head.expect_continue,
    };
    Ok(Some((framing, head)))
}

/// A complete body, and its length on the wire.
type Body<'b> = (Cow<'b, [u8]>, usize);

/// The body after a complete head; `None` until all of it is there.
fn body_of<'b>(buf: &'b [u8], framing: HeadFraming, chunks: &mut ChunkScan) -> Result<Option<Body<'b>>, Error> {
    let rest = &buf[framing.head_len..];
    match framing.framing {
        Framing::Length(length) => {
            // Checked against the limit (at most 1 GiB) at head time, so it fits in usize.
            let length = length as usize;
            Ok(rest.get(..length).map(|body| (Cow::Borrowed(body), length)))
        }
        Framing::Chunked => Ok(chunks.scan(rest, framing.limit)?.map(|wire_len| {
            (
                Cow::Owned(decode_chunked(&rest[..wire_len], chunks.data_bytes)),
                wire_len,
            )
        })),
    }
}

/// Parses a request head; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head<'_>>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(head_error(error, buf)),
    };
    if len > HEADER_BYTES_MAX {
        return Err(Error::HeadersTooLarge {
            detail: "request head over 16 KiB",
        });
    }
    // httparse fills method, path and version on Complete.
    let method = Method::parse(request.method.unwrap_or_default());
    let target = request.path.unwrap_or_default();
    let version = request.version.unwrap_or(1);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let facts = HeaderFacts::read(request.headers)?;
    let framing = facts.framing(version, method)?;
    Ok(Some(Head {
        info: HeadInfo {
            method,
            path,
            query,
            json: facts.json,
            authorization: facts.authorization,
            if_match: facts.if_match,
            if_none_match: facts.if_none_match,
        },
        len,
        framing,
        // HTTP/1.0 always closes: its keep-alive would need `Connection: keep-alive` echoed on
        // every response, for clients that are all but gone.
        keep_alive: !facts.close && version == 1,
        expect_continue: facts.expect_continue,
    }))
}

/// The answer to a head httparse refuses.
fn head_error(error: httparse::Error, buf: &[u8]) -> Error {
    match error {
        httparse::Error::TooManyHeaders => Error::HeadersTooLarge {
            detail: "more than 64 headers",
        },
        httparse::Error::Version if names_another_http_version(buf) => Error::VersionNotSupported,
        error => Error::BadRequest(format!("malformed request: {error}").into()),
    }
}

/// What the headers say that framing and routing need.
#[derive(Default)]
struct HeaderFacts<'b> {
    if_match: Option<&'b [u8]>,
    if_none_match: Option<&'b [u8]>,
    content_length: Option<u64>,
    codings: TransferCodings,
    json: bool,
    expect_continue: bool,
    close: bool,
    authorization: Option<&'b [u8]>,
}

/// The transfer codings of every `Transfer-Encoding` header, in order.
#[derive(Default)]
struct TransferCodings {
    /// A `Transfer-Encoding` header was sent.
    present: bool,
    /// Codings named, and how many of them were `chunked`.
    count: usize,
    chunked: usize,
    /// The last coding named is `chunked`.
    last_chunked: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in value.split(|&b| b == b',') {
            // A coding's parameters follow `;`.
            let name = coding.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
            if name.is_empty() {
                continue;
            }
            self.count += 1;
            self.last_chunked = name.eq_ignore_ascii_case(b"chunked");
            self.chunked += usize::from(self.last_chunked);
        }
    }
}

impl<'b> HeaderFacts<'b> {
    fn read(headers: &[httparse::Header<'b>]) -> Result<HeaderFacts<'b>, Error> {
        let mut facts = HeaderFacts::default();
        for header in headers {
            let (name, value) = (header.name, header.value);
            if name.eq_ignore_ascii_case("content-length") {
                let Some(length) = parse_content_length(value) else {
                    return Err(Error::bad_request("invalid Content-Length"));
                };
                if facts.content_length.is_some_and(|seen| seen != length) {
                    return Err(Error::bad_request("conflicting Content-Length headers"));
                }
                facts.content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                facts.codings.add(value);
            } else if name.eq_ignore_ascii_case("content-type") {
                let value = value.split(|&b| b == b';').next().unwrap_or_default();
                facts.json = value.trim_ascii().eq_ignore_ascii_case(b"application/json");
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    facts.close |= token.eq_ignore_ascii_case(b"close");
                }
            } else if name.eq_ignore_ascii_case("authorization") {
                facts.authorization = facts.authorization.or(Some(value));
            } else if name.eq_ignore_ascii_case("if-match") {
                facts.if_match = Some(value.trim_ascii());
            } else if name.eq_ignore_ascii_case("if-none-match") {
                facts.if_none_match = Some(value.trim_ascii());
            } else if name.eq_ignore_ascii_case("expect") {
                facts.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
        }
        Ok(facts)
    }

    /// How the body is framed (RFC 9112 §6): `Transfer-Encoding` must be a lone `chunked` on an
    /// HTTP/1.1 request without `Content-Length`; without it, `Content-Length` or no body.
    fn framing(&self, version: u8, method: Method) -> Result<Framing, Error> {
        let codings = &self.codings;
        if !codings.present {
            return match self.content_length {
                Some(length) => Ok(Framing::Length(length)),
                None if method.needs_body() => Err(Error::LengthRequired),
                None => Ok(Framing::Length(0)),
            };
        }
        if self.content_length.is_some() {
            return Err(Error::bad_request("both Content-Length and Transfer-Encoding"));
        }
        if version == 0 {
            return Err(Error::bad_request(
                "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1): send Content-Length",
            ));
        }
        // Without `chunked` last the body's end cannot be found: 400 and close (RFC 9112 §6.3).
        if !codings.last_chunked {
            return Err(Error::bad_request("Transfer-Encoding must end with chunked"));
        }
        if codings.chunked > 1 {
            return Err(Error::bad_request("Transfer-Encoding names chunked more than once"));
        }
        if codings.count > 1 {
            return Err(Error::NotImplemented(
                "transfer codings other than chunked (send a lone `Transfer-Encoding: chunked`)",
            ));
        }
        Ok(Framing::Chunked)
    }
}

/// True when the request line is well formed (`METHOD TARGET HTTP/x.y`) but names a version
/// other than 1.x: that is a 505; any other version error is a malformed request (400).
fn names_another_http_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    matches!(parts.as_slice(), [method, target, version]
        if !method.is_empty() && !target.is_empty()
            && version.len() == 8 && version.starts_with(b"HTTP/")
            && version[5].is_ascii_digit() && version[6] == b'.' && version[7].is_ascii_digit())
}

/// For a buffer holding only a partial head: the error once it is too large to ever fit.
pub fn head_overflow(buf: &[u8]) -> Option<Error> {
    if buf.len() <= HEADER_BYTES_MAX {
        return None;
    }
    let line_complete = buf[..HEADER_BYTES_MAX].windows(2).any(|w| w == b"\r\n");
    Some(if line_complete {
        Error::HeadersTooLarge {
            detail: "request head over 16 KiB",
        }
    } else {
        Error::RequestLineTooLong {
            limit: HEADER_BYTES_MAX,
        }
    })
}

fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Where a chunked body's scan stands: between steps, at the start of `phase`'s bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkPhase {
    /// A chunk-size line (`hex-size[;extensions]CRLF`).
    #[default]
    SizeLine,
    /// The data of a chunk of this many bytes, and its CRLF.
    Data(usize),
    /// The trailer section, which began at this offset of the body.
    Trailers(usize),
}

/// What one step of a chunked body's scan found.
enum Step {
    /// The bytes for the step are not all there yet.
    Wait,
    /// A line or a chunk's data was validated.
    Next,
    /// The empty line that ends the body was validated.
    Done,
}

/// A chunked body's scan so far: offsets are from the body's start (just after the head).
#[derive(Debug, Default)]
struct ChunkScan {
    /// Bytes validated so far: the start of the current phase.
    position: usize,
    /// How far the search for the current line's end has got (`>= position`).
    searched: usize,
    /// Data bytes of the chunks validated so far.
    data_bytes: usize,
    /// Chunks with data validated so far.
    chunks: usize,
    phase: ChunkPhase,
}

impl ChunkScan {
    /// Goes on validating the chunked body at the start of `rest` from where the last call
    /// stopped. Returns the body's length on the wire once it is complete.
    fn scan(&mut self, rest: &[u8], limit: BodyLimit) -> Result<Option<usize>, Error> {
        if self.searched > rest.len() {
            // Only a caller passing another request's progress gets here: start over.
            *self = ChunkScan::default();
        }
        loop {
            let step = match self.phase {
                ChunkPhase::SizeLine => self.size_line(rest, limit)?,
                ChunkPhase::Data(size) => self.data(rest, size)?,
                ChunkPhase::Trailers(start) => self.trailer_line(rest, start)?,
            };
            if self.position as u64 > limit.chunked_wire_bytes_max() {
                return Err(chunked_too_large(self.position as u64, limit));
            }
            match step {
                Step::Wait => break,
                Step::Next => {}
                Step::Done => return Ok(Some(self.position)),
            }
        }
        // Incomplete: every byte buffered after the head belongs to this body.
        if rest.len() as u64 > limit.chunked_wire_bytes_max() {
            return Err(chunked_too_large(rest.len() as u64, limit));
        }
        Ok(None)
    }

    fn size_line(&mut self, rest: &[u8], limit: BodyLimit) -> Result<Step, Error> {
        let too_long = Error::bad_request("chunk-size line (size and extensions) over 4096 bytes");
        let Some(end) = self.line_end(rest, self.position + CHUNK_LINE_BYTES_MAX, too_long)? else {
            return Ok(Step::Wait);
        };
        let size = chunk_size(&rest[self.position..end])?;
        self.position = end;
        if size == 0 {
            self.phase = ChunkPhase::Trailers(end);
            return Ok(Step::Next);
        }
        self.chunks += 1;
        if self.chunks > CHUNKS_PER_BODY_MAX {
            return Err(Error::bad_request("chunked body has more than 4096 chunks"));
        }
        // The whole chunk must fit before its data is waited for.
        let chunk_end = (end as u64).saturating_add(size).saturating_add(2);
        if chunk_end > limit.chunked_wire_bytes_max() {
            return Err(chunked_too_large(chunk_end, limit));
        }
        let data_bytes = (self.data_bytes as u64).saturating_add(size);
        if data_bytes > limit.bytes {
            return Err(Error::PayloadTooLarge {
                what: limit.what,
                size: data_bytes,
                limit: limit.bytes,
                flag: limit.flag,
            });
        }
        // Below the limit (at most 1 GiB), so it fits in usize.
        self.phase = ChunkPhase::Data(size as usize);
        Ok(Step::Next)
    }

    fn data(&mut self, rest: &[u8], size: usize) -> Result<Step, Error> {
        let end = self.position + size + 2;
        let Some(data) = rest.get(self.position..end) else {
            return Ok(Step::Wait);
        };
        if !data.ends_with(b"\r\n") {
            return Err(Error::bad_request("chunk data not followed by CRLF"));
        }
        self.data_bytes += size;
        self.position = end;
        self.searched = end;
        self.phase = ChunkPhase::SizeLine;
        Ok(Step::Next)
    }

    /// One trailer line, or the empty line that ends the body.
    fn trailer_line(&mut self, rest: &[u8], start: usize) -> Result<Step, Error> {
        let too_long = Error::HeadersTooLarge {
            detail: "chunked trailers over 16 KiB",
        };
        let Some(end) = self.line_end(rest, start + CHUNK_TRAILER_BYTES_MAX, too_long)? else {
            return Ok(Step::Wait);
        };
        let empty = end - self.position == 2;
        self.position = end;
        Ok(if empty { Step::Done } else { Step::Next })
    }

    /// The end (past its CRLF) of the line at `position`, which must end by `end_max`: searches
    /// only the bytes no earlier call searched.
    fn line_end(&mut self, rest: &[u8], end_max: usize, too_long: Error) -> Result<Option<usize>, Error> {
        let from = self.searched.max(self.position);
        let window_end = rest.len().min(end_max);
        let window = rest.get(from..window_end).unwrap_or_default();
        match window.iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = from + at + 1;
                if end - self.position < 2 || rest[end - 2] != b'\r' {
                    return Err(Error::bad_request("line of a chunked body not ended by CRLF"));
                }
                self.searched = end;
                Ok(Some(end))
            }
            None if rest.len() >= end_max => Err(too_long),
            None => {
                self.searched = window_end;
                Ok(None)
            }
        }
    }
}

/// The size a complete chunk-size line (CRLF included) announces.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let malformed = || Error::bad_request("malformed chunk size");
    // httparse reads an empty size as 0, the last chunk: refuse it.
    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
        return Err(malformed());
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((len, size))) if len == line.len() => Ok(size),
        _ => Err(malformed()),
    }
}

fn chunked_too_large(size: u64, limit: BodyLimit) -> Error {
    Error::PayloadTooLarge {
        what: "chunked body (framing included)",
        size,
        limit: limit.chunked_wire_bytes_max(),
        flag: limit.flag,
    }
}

/// Copies the data of a chunked body that [`ChunkScan::scan`] validated into one buffer.
fn decode_chunked(wire: &[u8], data_bytes: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(data_bytes);
    let mut position = 0;
    while let Some(Ok(httparse::Status::Complete((line_len, size)))) =
        wire.get(position..).map(httparse::parse_chunk_size)
    {
        position += line_len;
        // Validated: sizes are within the limit, so they fit in usize.
        let size = size as usize;
        match wire.get(position..position + size) {
            Some(data) if size > 0 => body.extend_from_slice(data),
            _ => break,
        }
        position += size + 2;
    }
    debug_assert_eq!(body.len(), data_bytes, "the scan validated these bytes");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: BodyLimit = BodyLimit {
        bytes: 100,
        what: "value",
        flag: "--max-value-bytes",
    };

    fn parse_all(buf: &[u8]) -> Parsed<'_> {
        parse(buf, &mut BodyProgress::default(), |_| LIMIT)
    }

    #[test]
    fn content_length_body_is_borrowed_and_consumed_exactly() {
        let raw = b"PUT /v1/keys/a?ttl_ms=5 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\n\r\n";
        let Parsed::Complete(request, used) = parse_all(raw) else {
            panic!("incomplete")
        };
        assert_eq!(request.head.method, Method::Put);
        assert_eq!((request.head.path, request.head.query), ("/v1/keys/a", "ttl_ms=5"));
        assert_eq!(&*request.body, b"abc");
        assert!(request.keep_alive);
        let Parsed::Complete(next, rest) = parse_all(&raw[used..]) else {
            panic!("second request")
        };
        assert_eq!(next.head.path, "/x");
        assert_eq!(used + rest, raw.len());
    }

    #[test]
    fn partial_requests_ask_for_more() {
        assert!(matches!(parse_all(b"GET /v1/pi"), Parsed::Incomplete(Need::Head)));
        let raw = b"PUT /k HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\nab";
        match parse_all(raw) {
            Parsed::Incomplete(Need::Body {
                total_bytes: Some(total),
                expect_continue: true,
            }) => {
                assert_eq!(total, raw.len() - 2 + 10);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_with_trailers() {
        let raw = b"POST /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let Parsed::Complete(request, used) = parse_all(raw) else {
            panic!("incomplete")
        };
        assert_eq!(&*request.body, b"abcde");
        assert_eq!(&raw[used..], b"NEXT");
        for cut in 50..raw.len() - 4 {
            assert!(matches!(parse_all(&raw[..cut]), Parsed::Incomplete(_)), "cut at {cut}");
        }
    }

    #[test]
    fn limits_and_framing_errors_map_to_statuses() {
        let status = |raw: &[u8]| match parse_all(raw) {
            Parsed::Invalid(error) => error.status(),
            other => panic!("{other:?}"),
        };
        assert_eq!(status(b"PUT /k HTTP/1.1\r\nContent-Length: 101\r\n\r\n"), 413);
        assert_eq!(status(b"PUT /k HTTP/1.1\r\n\r\n"), 411);
        assert_eq!(
            status(b"PUT /k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(status(b"PUT /k HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(
            status(b"PUT /k HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status(b"GE T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400
        );
        assert_eq!(
            status(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n"),
            413
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..70 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(status(&many), 431);
    }

    /// xorshift64*: a tiny deterministic generator, so a failing case can be replayed.
    fn next_random(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn random_and_mutated_input_never_panics_and_never_overreads() {
        let valid: &[&[u8]] = &[
            b"PUT /v1/keys/a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"GET /v1/keys/x%2Fy?ttl_ms=5 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for case in 0..50_000 {
            let mut input = valid[case % valid.len()].to_vec();
            match next_random(&mut state) % 3 {
                // Flip, insert or delete a few bytes of a valid request.
                0 => {
                    for _ in 0..1 + next_random(&mut state) % 4 {
                        let at = (next_random(&mut state) as usize) % input.len();
                        let byte = next_random(&mut state) as u8;
                        match next_random(&mut state) % 3 {
                            0 => input[at] = byte,
                            1 => input.insert(at, byte),
                            _ => {
                                input.remove(at);
                            }
                        }
                        if input.is_empty() {
                            input.push(byte);
                        }
                    }
                }
                // Truncate it.
                1 => input.truncate((next_random(&mut state) as usize) % input.len()),
                // Or pure noise, biased towards the bytes HTTP cares about.
                _ => {
                    let alphabet = b"GETPUSHD /:\r\n0123456789abcdefxyz%;-";
                    let length = (next_random(&mut state) % 200) as usize;
                    input = (0..length)
                        .map(|_| alphabet[(next_random(&mut state) as usize) % alphabet.len()])
                        .collect();
                }
            }
            if let Parsed::Complete(_, used) = parse(&input, &mut BodyProgress::default(), |_| LIMIT) {
                assert!(
                    used <= input.len(),
                    "case {case}: consumed {used} of {} bytes",
                    input.len()
                );
            }
            let _ = head_overflow(&input);
        }
    }

    #[test]
    fn oversized_heads_are_refused_before_they_complete() {
        let long_line = vec![b'a'; HEADER_BYTES_MAX + 1];
        let error = head_overflow(&long_line).unwrap();
        assert_eq!(error.status(), 414);
        let message = error.to_string();
        assert!(
            message.contains("request line") && !message.contains("--max-key-bytes"),
            "{message}"
        );
        let mut long_headers = b"GET / HTTP/1.1\r\n".to_vec();
        long_headers.resize(HEADER_BYTES_MAX + 1, b'x');
        assert_eq!(head_overflow(&long_headers).unwrap().status(), 431);
        assert!(head_overflow(b"GET / HT").is_none());
    }

    #[test]
    fn connection_semantics_follow_the_version() {
        let keep = |raw: &[u8]| match parse_all(raw) {
            Parsed::Complete(request, _) => request.keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(keep(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn json_content_type_is_recognised_with_parameters() {
        let json = |raw: &[u8]| match parse_all(raw) {
            Parsed::Complete(request, _) => request.head.json,
            other => panic!("{other:?}"),
        };
        assert!(json(
            b"POST /k HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!json(
            b"POST /k HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    /// The status of an invalid request, or a panic naming what it parsed to.
    fn status_with(raw: &[u8], limit: BodyLimit) -> u16 {
        match parse(raw, &mut BodyProgress::default(), |_| limit) {
            Parsed::Invalid(error) => error.status(),
            other => panic!("{other:?}"),
        }
    }

    const ROOMY: BodyLimit = BodyLimit {
        bytes: 100_000,
        what: "value",
        flag: "--max-value-bytes",
    };

    const CHUNKED_HEAD: &[u8] = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn chunk_size_lines_are_capped_before_they_end() {
        // A line of exactly the cap (CRLF included) is fine.
        let mut raw = CHUNKED_HEAD.to_vec();
        raw.extend_from_slice(b"1;");
        raw.resize(raw.len() + CHUNK_LINE_BYTES_MAX - 5, b'x');
        raw.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        let Parsed::Complete(request, used) = parse(&raw, &mut BodyProgress::default(), |_| ROOMY) else {
            panic!("a line at the cap is accepted")
        };
        assert_eq!((&*request.body, used), (&b"z"[..], raw.len()));
        // One byte more, and the line is refused while it is still arriving: no LF needed.
        let mut raw = CHUNKED_HEAD.to_vec();
        raw.extend_from_slice(b"1;");
        raw.resize(raw.len() + CHUNK_LINE_BYTES_MAX - 2, b'x');
        assert_eq!(status_with(&raw, ROOMY), 400);
        // The same in the trailers' own, larger cap.
        let mut raw = CHUNKED_HEAD.to_vec();
        raw.extend_from_slice(b"0\r\nX: ");
        raw.resize(raw.len() + CHUNK_TRAILER_BYTES_MAX, b'y');
        assert_eq!(status_with(&raw, ROOMY), 431);
    }

    #[test]
    fn chunked_framing_counts_toward_the_body_limit() {
        // 30 one-byte chunks: 30 data bytes, under the 100-byte limit, 185 on the wire: framing
        // within its allowance is accepted.
        let mut raw = CHUNKED_HEAD.to_vec();
        for _ in 0..30 {
            raw.extend_from_slice(b"1\r\nx\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        assert!(matches!(parse_all(&raw), Parsed::Complete(request, _) if request.body.len() == 30));
        // Data past the limit is refused, whatever the framing.
        let mut raw = CHUNKED_HEAD.to_vec();
        raw.extend_from_slice(b"65\r\n");
        assert_eq!(status_with(&raw, LIMIT), 413);
        // Framing past its allowance (long extensions on one-byte chunks) is refused, with
        // the framing named, even before the body completes.
        let mut raw = CHUNKED_HEAD.to_vec();
        let extension = vec![b'e'; CHUNK_LINE_BYTES_MAX - 16];
        let lines = CHUNK_FRAMING_BYTES_MAX as usize / extension.len() + 2;
        for _ in 0..lines.min(90) {
            raw.extend_from_slice(b"1;");
            raw.extend_from_slice(&extension);
            raw.extend_from_slice(b"\r\nx\r\n");
        }
        let parsed = parse(&raw, &mut BodyProgress::default(), |_| LIMIT);
        let Parsed::Invalid(error) = parsed else {
            panic!(
                "framing past its allowance is refused: {} bytes gave {parsed:?}",
                raw.len()
            )
        };
        assert!(error.to_string().contains("framing included"), "{error}");
        // Trailers are framing too, bounded on their own (431) well inside the allowance.
        let mut raw = CHUNKED_HEAD.to_vec();
        raw.extend_from_slice(b"1\r\nx\r\n0\r\n");
        for _ in 0..lines.min(90) {
            raw.extend_from_slice(b"T: ");
            raw.extend_from_slice(&extension[..CHUNK_TRAILER_BYTES_MAX / 8]);
            raw.extend_from_slice(b"\r\n");
        }
        assert_eq!(status_with(&raw, LIMIT), 431);
    }

    #[test]
    fn incremental_parse_resumes_where_it_stopped_and_resets_after() {
        let raw = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
        let first_chunk_end = CHUNKED_HEAD.len() + b"3;a=b\r\nabc\r\n".len();
        let mut progress = BodyProgress::default();
        let mut buf = raw[..first_chunk_end + 2].to_vec();
        assert!(matches!(
            parse(&buf, &mut progress, |_| LIMIT),
            Parsed::Incomplete(Need::Body { .. })
        ));
        // The first chunk is behind the resume point: a scan from the start would now see
        // its CRLF is gone; a resumed one never looks at it again.
        buf[first_chunk_end - 2..first_chunk_end].copy_from_slice(b"XY");
        buf.extend_from_slice(&raw[first_chunk_end + 2..]);
        buf.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let Parsed::Complete(request, used) = parse(&buf, &mut progress, |_| LIMIT) else {
            panic!("resumed")
        };
        assert_eq!((&*request.body, used), (&b"abcdefg"[..], raw.len()));
        assert_eq!(
            status_with(&buf[..raw.len()], LIMIT),
            400,
            "a fresh scan sees the damage"
        );
        // Reset on completion: the next request starts from its own head.
        let Parsed::Complete(next, _) = parse(&buf[used..], &mut progress, |_| LIMIT) else {
            panic!("the next request")
        };
        assert_eq!(next.head.path, "/next");
    }

    #[test]
    fn transfer_codings_follow_rfc_9112() {
        let status = |raw: &[u8]| status_with(raw, LIMIT);
        assert_eq!(
            status(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        // Without chunked last the body cannot be framed: 400 (RFC 9112 §6.3), not 501.
        assert_eq!(
            status(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            400
        );
        assert_eq!(status(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n"), 400);
        assert_eq!(status(b"PUT /k HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        let Parsed::Invalid(error) = parse_all(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: br, chunked\r\n\r\n") else {
            panic!()
        };
        assert!(error.closes_connection(), "the body that follows cannot be framed");
        let raw = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\nq\r\n0\r\n\r\n";
        assert!(matches!(parse_all(raw), Parsed::Complete(r, _) if &*r.body == b"q"));
    }

    #[test]
    fn bodies_are_refused_unread_where_the_route_takes_none() {
        let none = BodyLimit::none("GET, HEAD and DELETE requests");
        // Refused from the head alone, before any of the body is there.
        for raw in [
            &b"GET /v1/ping HTTP/1.1\r\nContent-Length: 5\r\n\r\n"[..],
            b"GET /v1/ping HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let Parsed::Invalid(error) = parse(raw, &mut BodyProgress::default(), |_| none) else {
                panic!("refused at head time")
            };
            assert_eq!(error.status(), 413);
            assert!(error.to_string().contains("take no body"), "{error}");
        }
        let raw = b"GET /v1/ping HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse(raw, &mut BodyProgress::default(), |_| none),
            Parsed::Complete(..)
        ));
    }

    #[test]
    fn chunk_sizes_are_strict() {
        for body in [
            &b"\r\n\r\n"[..],
            b"1\nx\r\n0\r\n\r\n",
            b"1\r\nx\r\n0\r\nT: 1\n\r\n",
            b"-1\r\n",
        ] {
            let raw = [CHUNKED_HEAD, body].concat();
            assert_eq!(status_with(&raw, LIMIT), 400, "{:?}", String::from_utf8_lossy(body));
        }
        let mut many = CHUNKED_HEAD.to_vec();
        for _ in 0..=CHUNKS_PER_BODY_MAX {
            many.extend_from_slice(b"1\r\nx\r\n");
        }
        assert_eq!(
            status_with(
                &many,
                BodyLimit {
                    bytes: 1 << 20,
                    ..ROOMY
                }
            ),
            400
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One generated request: its bytes and what parsing it must give.
        #[derive(Debug, Clone)]
        struct Sample {
            wire: Vec<u8>,
            path: String,
            body: Vec<u8>,
        }

        fn chunked(chunks: &[(Vec<u8>, Option<String>)], trailers: &[String]) -> Vec<u8> {
            let mut wire = Vec::new();
            for (data, extension) in chunks.iter().filter(|(data, _)| !data.is_empty()) {
                wire.extend_from_slice(format!("{:x}", data.len()).as_bytes());
                if let Some(extension) = extension {
                    wire.extend_from_slice(format!(";{extension}").as_bytes());
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(data);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n");
            for trailer in trailers {
                wire.extend_from_slice(format!("X-{trailer}: v\r\n").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
            wire
        }

        fn sample() -> impl Strategy<Value = Sample> {
            let chunks = prop::collection::vec(
                (
                    prop::collection::vec(any::<u8>(), 0..40),
                    prop::option::of("[a-z]{1,8}(=[a-z0-9]{0,8})?"),
                ),
                0..6,
            );
            let trailers = prop::collection::vec("[a-z]{1,6}", 0..3);
            (
                "[a-z0-9]{1,12}",
                prop::collection::vec(any::<u8>(), 0..60),
                any::<bool>(),
                chunks,
                trailers,
            )
                .prop_map(|(key, data, use_chunked, chunks, trailers)| {
                    let path = format!("/v1/keys/{key}");
                    let (framing, body_wire, body) = if use_chunked {
                        let body = chunks.iter().flat_map(|(data, _)| data.clone()).collect();
                        (
                            "Transfer-Encoding: chunked".to_string(),
                            chunked(&chunks, &trailers),
                            body,
                        )
                    } else {
                        (format!("Content-Length: {}", data.len()), data.clone(), data)
                    };
                    let mut wire = format!("PUT {path} HTTP/1.1\r\nHost: h\r\n{framing}\r\n\r\n").into_bytes();
                    wire.extend_from_slice(&body_wire);
                    Sample { wire, path, body }
                })
        }

        /// What one parse call found, owned, so that runs can be compared.
        #[derive(Debug, PartialEq, Eq)]
        enum Seen {
            Request { path: String, body: Vec<u8>, used: usize },
            Error(u16),
        }

        /// Feeds `input` as the connection does, cut at `cuts`: after each arrival parse every
        /// complete request, drop its bytes, keep the rest. Returns what was seen, and the
        /// outcome the last call gave with the bytes left over.
        fn feed(input: &[u8], cuts: &[usize], limit: BodyLimit) -> (Vec<Seen>, Option<Need>, Vec<u8>) {
            let mut bounds: Vec<usize> = cuts.iter().map(|&cut| cut % (input.len() + 1)).collect();
            bounds.push(input.len());
            bounds.sort_unstable();
            let (mut seen, mut buffer, mut progress, mut from) = (Vec::new(), Vec::new(), BodyProgress::default(), 0);
            let mut need = None;
            for to in bounds {
                buffer.extend_from_slice(&input[from..to]);
                from = to;
                loop {
                    if buffer.is_empty() {
                        need = None;
                        break;
                    }
                    match parse(&buffer, &mut progress, |_| limit) {
                        Parsed::Complete(request, used) => {
                            assert!(used > 0 && used <= buffer.len(), "used {used} of {}", buffer.len());
                            seen.push(Seen::Request {
                                path: request.head.path.to_string(),
                                body: request.body.into_owned(),
                                used,
                            });
                            buffer.drain(..used);
                        }
                        Parsed::Incomplete(incomplete) => {
                            need = Some(incomplete);
                            break;
                        }
                        Parsed::Invalid(error) => {
                            let status = error.status();
                            assert!((400..600).contains(&status), "{error:?}");
                            seen.push(Seen::Error(status));
                            return (seen, None, buffer);
                        }
                    }
                }
            }
            (seen, need, buffer)
        }

        const PROPERTY_LIMIT: BodyLimit = BodyLimit {
            bytes: 64,
            what: "value",
            flag: "--max-value-bytes",
        };

        proptest! {
            // Failures print their minimal input; none is saved to a regressions file.
            #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

            /// Valid pipelined streams parse to the same requests however they are cut.
            #[test]
            fn cutting_a_valid_stream_anywhere_changes_nothing(
                samples in prop::collection::vec(sample(), 1..5),
                cuts in prop::collection::vec(any::<usize>(), 0..12),
            ) {
                let stream: Vec<u8> = samples.iter().flat_map(|s| s.wire.clone()).collect();
                let expected: Vec<Seen> = samples
                    .iter()
                    .map(|s| Seen::Request { path: s.path.clone(), body: s.body.clone(), used: s.wire.len() })
                    .collect();
                let whole = feed(&stream, &[], ROOMY);
                prop_assert_eq!(&whole.0, &expected);
                prop_assert!(whole.2.is_empty());
                let cut = feed(&stream, &cuts, ROOMY);
                prop_assert_eq!(&cut.0, &expected);
                let every_byte: Vec<usize> = (0..stream.len()).collect();
                prop_assert_eq!(&feed(&stream, &every_byte, ROOMY).0, &expected);
            }

            /// Arbitrary bytes, whole or cut: the same requests, then the same kind of end (an
            /// error status or waiting), never a panic; and a body never waits for more once
            /// the bytes buffered for it pass its limit.
            #[test]
            fn arbitrary_bytes_parse_or_fail_the_same_whole_or_cut(
                prefix in prop::sample::select(vec![
                    &b""[..],
                    b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    // Inside an extension, where almost any byte keeps the line going.
                    b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;e=",
                    b"PUT /k HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
                    b"GET / HTTP/1.1\r\n\r\n",
                ]),
                noise in prop::collection::vec(
                    prop_oneof![
                        4 => prop::sample::select(b"0123456789abcdefxyz;= \r\n\r\n:GETPU/".to_vec()),
                        1 => any::<u8>(),
                    ],
                    0..300,
                ),
                cuts in prop::collection::vec(any::<usize>(), 0..8),
            ) {
                let input = [prefix, &noise[..]].concat();
                let whole = feed(&input, &[], PROPERTY_LIMIT);
                let cut = feed(&input, &cuts, PROPERTY_LIMIT);
                let requests = |seen: &[Seen]| seen.iter().filter(|s| matches!(s, Seen::Request { .. })).count();
                prop_assert_eq!(requests(&whole.0), requests(&cut.0));
                prop_assert_eq!(&whole.0[..requests(&whole.0)], &cut.0[..requests(&cut.0)]);
                prop_assert_eq!(whole.1.is_some(), cut.1.is_some(), "both wait, or neither");
                for (_, need, left) in [&whole, &cut] {
                    match need {
                        Some(Need::Body { .. }) => {
                            let head_len = left.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                            prop_assert!(left.len() - head_len <= PROPERTY_LIMIT.chunked_wire_bytes_max() as usize);
                        }
                        Some(Need::Head) => prop_assert!(left.len() <= HEADER_BYTES_MAX),
                        None => {}
                    }
                }
            }
        }
    }
}
