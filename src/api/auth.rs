//! Access control (`--auth-token-file`): the token table, its publication to every shard, and
//! which role each route needs ([`required`]).
//!
//! Owns the `TOKEN ROLE` file format, bearer-token lookup and the route classes. It never logs
//! or formats a token (errors name line numbers only), never compares token bytes in variable
//! time (tokens are kept as SHA-256 digests and compared with `subtle`), and reads the file only
//! on the main thread (at start and on SIGHUP). A shard reads its own `Rc` copy of the table;
//! the shared [`Published`] table is touched only when its generation changes.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::http::request::{HeadInfo, Method};
use crate::limits::AUTH_TOKENS_MAX;

/// What a token may do. Each role implies the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GET and HEAD of keys (and the OpenAPI document).
    Read,
    /// Read, plus every write.
    Write,
    /// Write, plus `/v1/stats` and `/metrics`.
    Admin,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name in the token file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// What a route needs from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks (`/v1/ping`, `/v1/readiness`), `/metrics` with `--metrics-open`.
    Open,
    /// A token with at least this role.
    Role(Role),
}

/// The route classes, in one place so a new route is classified by reading one match:
/// health checks are open; operators' numbers need `admin`; every other route (keys, the seeds'
/// routes, unknown paths, and routes added later such as listings or watches) needs `read` for
/// GET/HEAD and `write` for any other method. A new route that reads state with a POST (a
/// read-only transaction) is still a write here: give it its own arm if that matters.
pub fn required(method: Method, path: &str, metrics_open: bool) -> Need {
    match path {
        "/v1/ping" | "/v1/readiness" => Need::Open,
        "/metrics" if metrics_open => Need::Open,
        "/metrics" | "/v1/stats" => Need::Role(Role::Admin),
        _ => match method {
            Method::Get | Method::Head => Need::Role(Role::Read),
            _ => Need::Role(Role::Write),
        },
    }
}

/// Checks a request's `Authorization: Bearer TOKEN` against the route's need: 401 without a
/// known token, 403 when its role is too low.
pub fn check(head: &HeadInfo<'_>, tokens: &Tokens, metrics_open: bool) -> Result<(), Error> {
    let Need::Role(needed) = required(head.method, head.path, metrics_open) else {
        return Ok(());
    };
    let Some(token) = head.authorization.and_then(bearer_token) else {
        return Err(Error::Unauthorized("send Authorization: Bearer <token>"));
    };
    let Some(role) = tokens.role_of(token) else {
        return Err(Error::Unauthorized("unknown token"));
    };
    if role < needed {
        return Err(Error::Forbidden {
            role: role.name(),
            needed: needed.name(),
        });
    }
    Ok(())
}

/// The token of an `Authorization` header's value when its scheme is `Bearer` (any case).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, token) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !token.first()?.is_ascii_whitespace() {
        return None;
    }
    Some(token.trim_ascii()).filter(|token| !token.is_empty())
}

/// The characters RFC 6750's `b64token` allows (`=` only as padding at the end).
fn is_token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The table of tokens: SHA-256 digests and roles, immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Role)>,
}

impl Tokens {
    /// Reads a token file; errors name the file and line, never a token.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--auth-token-file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("--auth-token-file {}:{e}", path.display()))
    }

    /// Parses `TOKEN ROLE` lines; blank lines and lines starting with `#` are skipped. An error
    /// reads `LINE: what is wrong`.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<([u8; 32], Role)> = Vec::new();
        let mut lines_of = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, role] = fields[..] else {
                return Err(format!("{number}: expected `TOKEN ROLE`"));
            };
            if !is_token(token) {
                return Err(format!(
                    "{number}: a token may hold only letters, digits and -._~+/ (then = padding)"
                ));
            }
            let role = Role::parse(role).ok_or_else(|| format!("{number}: the role must be read, write or admin"))?;
            let digest = digest(token.as_bytes());
            if let Some(first) = entries.iter().position(|(seen, _)| *seen == digest) {
                return Err(format!("{number}: the same token as line {}", lines_of[first]));
            }
            if entries.len() == AUTH_TOKENS_MAX {
                return Err(format!("{number}: more than {AUTH_TOKENS_MAX} tokens"));
            }
            entries.push((digest, role));
            lines_of.push(number);
        }
        Ok(Tokens { entries })
    }

    /// How many tokens the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds no token (then every guarded route answers 401).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of `token`. Every entry is compared, in constant time, whatever matches.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let digest = digest(token);
        let mut found = None;
        for (entry, role) in &self.entries {
            if bool::from(entry.ct_eq(&digest)) {
                found = Some(*role);
            }
        }
        found
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The current table, shared by the main thread (which replaces it) and every shard (which
/// copies it when `generation` moves).
#[derive(Debug)]
pub struct Published {
    /// Bumped after every replacement; shards compare it with the one they copied.
    generation: AtomicU64,
    tokens: Mutex<Tokens>,
}

impl Published {
    pub fn new(tokens: Tokens) -> Arc<Published> {
        Arc::new(Published {
            generation: AtomicU64::new(0),
            tokens: Mutex::new(tokens),
        })
    }

    /// Publishes a new table (main thread, on SIGHUP).
    pub fn replace(&self, tokens: Tokens) {
        // A poisoned lock only means a reader panicked mid-clone; the table itself is whole.
        *self.tokens.lock().unwrap_or_else(|e| e.into_inner()) = tokens;
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, Tokens) {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: a replacement bumps it only after storing its table, so a
        // generation read here is never newer than the table copied with it.
        (self.generation.load(Ordering::Relaxed), tokens.clone())
    }
}

/// One shard's copy of the table: one relaxed load per use, a copy only after a reload.
#[derive(Debug)]
pub struct ShardTokens {
    published: Arc<Published>,
    seen: Cell<u64>,
    current: RefCell<Rc<Tokens>>,
}

impl ShardTokens {
    pub fn new(published: Arc<Published>) -> ShardTokens {
        let (seen, tokens) = published.snapshot();
        ShardTokens {
            published,
            seen: Cell::new(seen),
            current: RefCell::new(Rc::new(tokens)),
        }
    }

    /// The table as of the last reload this shard has seen.
    pub fn current(&self) -> Rc<Tokens> {
        if self.published.generation.load(Ordering::Relaxed) != self.seen.get() {
            let (seen, tokens) = self.published.snapshot();
            self.seen.set(seen);
            *self.current.borrow_mut() = Rc::new(tokens);
        }
        self.current.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(method: Method, path: &'a str, authorization: Option<&'a [u8]>) -> HeadInfo<'a> {
        HeadInfo {
            authorization,
            ..HeadInfo::of(method, path)
        }
    }

    #[test]
    fn token_files_parse_and_errors_name_lines_not_tokens() {
        let tokens = Tokens::parse("# ops\n\nr0 read\n  w0   write\nA-b._~+/c== admin\n").unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens.role_of(b"r0"), Some(Role::Read));
        assert_eq!(tokens.role_of(b"w0"), Some(Role::Write));
        assert_eq!(tokens.role_of(b"A-b._~+/c=="), Some(Role::Admin));
        assert_eq!(tokens.role_of(b"r"), None);
        assert_eq!(tokens.role_of(b""), None);
        for (text, error) in [
            ("secret1\n", "1: expected `TOKEN ROLE`"),
            ("ok read\nsecret2 read extra\n", "2: expected"),
            ("secret3 root\n", "1: the role must be"),
            ("sec\"ret4 read\n", "1: a token may hold only"),
            ("secret5 read\nsecret5 admin\n", "2: the same token as line 1"),
        ] {
            let message = Tokens::parse(text).unwrap_err();
            assert!(message.starts_with(error), "{text:?}: {message}");
            assert!(!message.contains("secret"), "a token leaked: {message}");
        }
        let many: String = (0..=AUTH_TOKENS_MAX).map(|i| format!("t{i} read\n")).collect();
        assert!(Tokens::parse(&many).unwrap_err().contains("more than"));
    }

    #[test]
    fn routes_are_classified_open_read_write_admin() {
        use Need::*;
        for (method, path, need) in [
            (Method::Get, "/v1/ping", Open),
            (Method::Post, "/v1/readiness", Open),
            (Method::Get, "/v1/keys/k", Role(super::Role::Read)),
            (Method::Head, "/get", Role(super::Role::Read)),
            (Method::Get, "/v1/openapi.json", Role(super::Role::Read)),
            (Method::Get, "/nope/at/all", Role(super::Role::Read)),
            (Method::Put, "/v1/keys/k", Role(super::Role::Write)),
            (Method::Patch, "/v1/keys", Role(super::Role::Write)),
            (Method::Delete, "/delete", Role(super::Role::Write)),
            (Method::Other, "/v1/keys/k", Role(super::Role::Write)),
            (Method::Get, "/v1/stats", Role(super::Role::Admin)),
            (Method::Get, "/metrics", Role(super::Role::Admin)),
        ] {
            assert_eq!(required(method, path, false), need, "{method:?} {path}");
        }
        assert_eq!(required(Method::Get, "/metrics", true), Open);
        assert_eq!(required(Method::Get, "/v1/stats", true), Role(super::Role::Admin));
    }

    #[test]
    fn checks_answer_401_without_a_known_token_and_403_below_the_role() {
        let tokens = Tokens::parse("rr read\nww write\naa admin\n").unwrap();
        let status = |method, path, auth: Option<&[u8]>| {
            check(&head(method, path, auth), &tokens, false).map_or_else(|e| e.status(), |()| 200)
        };
        assert_eq!(status(Method::Get, "/v1/ping", None), 200);
        assert_eq!(status(Method::Get, "/v1/keys/k", None), 401);
        assert_eq!(status(Method::Get, "/v1/keys/k", Some(b"Bearer nope")), 401);
        assert_eq!(status(Method::Get, "/v1/keys/k", Some(b"Basic rr")), 401);
        assert_eq!(status(Method::Get, "/v1/keys/k", Some(b"Bearerrr")), 401);
        assert_eq!(status(Method::Get, "/v1/keys/k", Some(b"Bearer ")), 401);
        assert_eq!(status(Method::Get, "/v1/keys/k", Some(b"bearer  rr ")), 200);
        assert_eq!(status(Method::Put, "/v1/keys/k", Some(b"Bearer rr")), 403);
        assert_eq!(status(Method::Put, "/v1/keys/k", Some(b"Bearer ww")), 200);
        assert_eq!(status(Method::Get, "/v1/stats", Some(b"Bearer ww")), 403);
        assert_eq!(status(Method::Get, "/v1/stats", Some(b"Bearer aa")), 200);
        assert_eq!(status(Method::Delete, "/k", Some(b"Bearer aa")), 200);
    }

    #[test]
    fn a_shard_sees_a_replaced_table_and_copies_only_then() {
        let published = Published::new(Tokens::parse("old read\n").unwrap());
        let shard = ShardTokens::new(published.clone());
        let first = shard.current();
        assert!(Rc::ptr_eq(&first, &shard.current()), "no copy without a reload");
        assert_eq!(first.role_of(b"old"), Some(Role::Read));
        published.replace(Tokens::parse("new admin\n").unwrap());
        let second = shard.current();
        assert_eq!(
            (second.role_of(b"old"), second.role_of(b"new")),
            (None, Some(Role::Admin))
        );
        assert!(Rc::ptr_eq(&second, &shard.current()));
    }
}
