//! Parses one request at a time out of a connection's read buffer: head by `httparse`, body by
//! `Content-Length` or `Transfer-Encoding: chunked`, with every limit checked before the bytes
//! are waited for.
//!
//! Owns request framing only. It never reads the socket (the buffer is given) and never
//! decides what a route means; the body limit for a request comes from [`crate::api`].

use std::borrow::Cow;

use crate::error::Error;
use crate::limits::{HEADER_BYTES_MAX, HEADERS_COUNT_MAX};

/// Most chunks one chunked body may have (bounds the work of re-scanning a partial body).
pub const CHUNKS_PER_BODY_MAX: usize = 4096;

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

/// The largest body a request may have, and how to name the limit in a 413.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    pub bytes: u64,
    pub what: &'static str,
    pub flag: &'static str,
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

/// Parses the request at the start of `buf`. `body_limit` maps a request's head to the largest
/// body its route accepts.
pub fn parse<'b>(buf: &'b [u8], body_limit: impl FnOnce(&HeadInfo<'b>) -> BodyLimit) -> Parsed<'b> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Incomplete(Need::Head),
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Invalid(Error::HeadersTooLarge {
                detail: "more than 64 headers",
            });
        }
        Err(httparse::Error::Version) if names_another_http_version(buf) => {
            return Parsed::Invalid(Error::VersionNotSupported);
        }
        Err(error) => {
            return Parsed::Invalid(Error::BadRequest(format!("malformed request: {error}").into()));
        }
    };
    if head_len > HEADER_BYTES_MAX {
        return Parsed::Invalid(Error::HeadersTooLarge {
            detail: "request head over 16 KiB",
        });
    }
    // httparse fills method, path and version on Complete.
    let method = Method::parse(request.method.unwrap_or_default());
    let target = request.path.unwrap_or_default();
    let version = request.version.unwrap_or(1);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut json = false;
    let mut expect_continue = false;
    let mut close = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(length) = parse_content_length(header.value) else {
                return Parsed::Invalid(Error::bad_request("invalid Content-Length"));
            };
            if content_length.is_some_and(|seen| seen != length) {
                return Parsed::Invalid(Error::bad_request("conflicting Content-Length headers"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let value = String::from_utf8_lossy(header.value);
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Parsed::Invalid(Error::bad_request("unsupported Transfer-Encoding (only chunked)"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-type") {
            let value = header.value.split(|&b| b == b';').next().unwrap_or_default();
            json = value.trim_ascii().eq_ignore_ascii_case(b"application/json");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = header.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    if chunked && content_length.is_some() {
        return Parsed::Invalid(Error::bad_request("both Content-Length and Transfer-Encoding"));
    }
    // HTTP/1.0 always closes: its keep-alive would need `Connection: keep-alive` echoed on every
    // response, for clients that are all but gone.
    let keep_alive = !close && version == 1;
    let head = HeadInfo {
        method,
        path,
        query,
        json,
    };
    if method.needs_body() && !chunked && content_length.is_none() {
        return Parsed::Invalid(Error::LengthRequired);
    }
    let limit = body_limit(&head);
    let rest = &buf[head_len..];

    let body = if chunked {
        match scan_chunked(rest, limit) {
            Ok(ChunkScan::Complete { body_len, wire_len }) => {
                let mut body = Vec::with_capacity(body_len);
                // The scan just validated these exact bytes, so the copy cannot fail.
                let _ = scan_chunked_into(rest, &mut body);
                return Parsed::Complete(
                    Request {
                        head,
                        body: Cow::Owned(body),
                        keep_alive,
                    },
                    head_len + wire_len,
                );
            }
            Ok(ChunkScan::Incomplete) => {
                return Parsed::Incomplete(Need::Body {
                    total_bytes: None,
                    expect_continue,
                });
            }
            Err(error) => return Parsed::Invalid(error),
        }
    } else {
        let length = content_length.unwrap_or(0);
        if length > limit.bytes {
            return Parsed::Invalid(Error::PayloadTooLarge {
                what: limit.what,
                size: length,
                limit: limit.bytes,
                flag: limit.flag,
            });
        }
        // Bounded by the limit (at most 1 GiB), so it fits in usize.
        let length = length as usize;
        if rest.len() < length {
            return Parsed::Incomplete(Need::Body {
                total_bytes: Some(head_len + length),
                expect_continue,
            });
        }
        &rest[..length]
    };
    Parsed::Complete(
        Request {
            head,
            body: Cow::Borrowed(body),
            keep_alive,
        },
        head_len + body.len(),
    )
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
        Error::UriTooLong {
            size: buf.len(),
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

enum ChunkScan {
    Complete { body_len: usize, wire_len: usize },
    Incomplete,
}

/// Validates a chunked body at the start of `buf` without copying it.
fn scan_chunked(buf: &[u8], limit: BodyLimit) -> Result<ChunkScan, Error> {
    let mut position = 0;
    let mut body_len = 0usize;
    for _ in 0..=CHUNKS_PER_BODY_MAX {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[position..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(ChunkScan::Incomplete),
            Err(_) => return Err(Error::bad_request("malformed chunk size")),
        };
        position += size_len;
        if size == 0 {
            return Ok(match trailer_len(&buf[position..])? {
                Some(len) => ChunkScan::Complete {
                    body_len,
                    wire_len: position + len,
                },
                None => ChunkScan::Incomplete,
            });
        }
        let grown = (body_len as u64).saturating_add(size);
        if grown > limit.bytes {
            return Err(Error::PayloadTooLarge {
                what: limit.what,
                size: grown,
                limit: limit.bytes,
                flag: limit.flag,
            });
        }
        // Bounded by the limit just checked.
        let size = size as usize;
        if buf.len() < position + size + 2 {
            return Ok(ChunkScan::Incomplete);
        }
        if &buf[position + size..position + size + 2] != b"\r\n" {
            return Err(Error::bad_request("chunk data not followed by CRLF"));
        }
        body_len += size;
        position += size + 2;
    }
    Err(Error::bad_request("chunked body has more than 4096 chunks"))
}

/// Copies the data of an already validated chunked body into `body`.
fn scan_chunked_into(buf: &[u8], body: &mut Vec<u8>) -> Option<()> {
    let mut position = 0;
    loop {
        let httparse::Status::Complete((size_len, size)) = httparse::parse_chunk_size(&buf[position..]).ok()? else {
            return None;
        };
        position += size_len;
        if size == 0 {
            return Some(());
        }
        let size = size as usize;
        body.extend_from_slice(buf.get(position..position + size)?);
        position += size + 2;
    }
}

/// Length of the trailer section after the last chunk (ending in an empty line), if complete.
fn trailer_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let mut position = 0;
    loop {
        let Some(end) = buf[position..].windows(2).position(|w| w == b"\r\n") else {
            if buf.len() > HEADER_BYTES_MAX {
                return Err(Error::HeadersTooLarge {
                    detail: "chunked trailers over 16 KiB",
                });
            }
            return Ok(None);
        };
        position += end + 2;
        if end == 0 {
            return Ok(Some(position));
        }
        if position > HEADER_BYTES_MAX {
            return Err(Error::HeadersTooLarge {
                detail: "chunked trailers over 16 KiB",
            });
        }
    }
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
        parse(buf, |_| LIMIT)
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
            if let Parsed::Complete(_, used) = parse(&input, |_| LIMIT) {
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
        assert_eq!(head_overflow(&long_line).unwrap().status(), 414);
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
}
