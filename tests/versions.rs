//! Versions and conditional writes (issue #15.1) against the real server (2 shards), in both
//! designs: ETags on reads and writes, `If-Match` / `If-None-Match: *` statuses, and no lost
//! update when many clients do read-modify-write on one key at once.

mod common;

use common::{Conn, Server};

macro_rules! both_designs {
    ($($name:ident),* $(,)?) => {
        mod sharded { $( #[test] fn $name() { super::$name(&["--design", "sharded"]); } )* }
        mod locked { $( #[test] fn $name() { super::$name(&["--design", "locked"]); } )* }
    };
}

both_designs!(
    etags_change_on_every_write_and_match_reads,
    if_match_and_if_none_match_answer_412_and_change_nothing,
    malformed_conditions_are_400,
    concurrent_read_modify_write_loses_no_update,
);

fn etag(response: &common::Response) -> String {
    response.header("etag").expect("an ETag header").to_string()
}

// Goal: GET answers the ETag the last write answered; every write (PUT, PATCH, re-create)
// answers a new one.
fn etags_change_on_every_write_and_match_reads(design: &[&str]) {
    let server = Server::start(design);
    let mut conn = server.connect();
    let created = conn.request("PUT", "/v1/keys/k", &[], b"1");
    assert_eq!(created.status, 201);
    let first = etag(&created);
    assert!(first.starts_with('"') && first.ends_with('"'), "a strong ETag: {first}");
    assert_eq!(etag(&conn.request("GET", "/v1/keys/k", &[], b"")), first);
    assert_eq!(etag(&conn.request("HEAD", "/v1/keys/k", &[], b"")), first);
    let replaced = etag(&conn.request("PUT", "/v1/keys/k", &[], b"2"));
    let patched = etag(&conn.request("PATCH", "/v1/keys/k", &[], b"3"));
    assert_eq!(conn.request("DELETE", "/v1/keys/k", &[], b"").status, 200);
    let recreated = etag(&conn.request("PUT", "/v1/keys/k", &[], b"4"));
    let all = [&first, &replaced, &patched, &recreated];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b, "every write has its own version");
        }
    }
    assert_eq!(etag(&conn.request("GET", "/v1/keys/k", &[], b"")), recreated);
}

// Goal: a stale If-Match and an If-None-Match: * on an existing key are 412 and leave the
// value alone; matching conditions write; a missing key with If-Match is 412.
fn if_match_and_if_none_match_answer_412_and_change_nothing(design: &[&str]) {
    let server = Server::start(design);
    let mut conn = server.connect();
    let create_only = [("If-None-Match", "*")];
    let created = conn.request("PUT", "/v1/keys/a", &create_only, b"one");
    assert_eq!(created.status, 201);
    let v1 = etag(&created);
    let again = conn.request("PUT", "/v1/keys/a", &create_only, b"two");
    assert_eq!(again.status, 412, "create-only of an existing key");
    assert!(again.error().contains("precondition"), "{}", again.error());
    let ok = conn.request("PUT", "/v1/keys/a", &[("If-Match", &v1)], b"two");
    assert_eq!(ok.status, 200);
    let v2 = etag(&ok);
    for (method, body) in [("PUT", &b"x"[..]), ("PATCH", b"x"), ("DELETE", b"")] {
        let stale = conn.request(method, "/v1/keys/a", &[("If-Match", &v1)], body);
        assert_eq!(stale.status, 412, "{method} with a stale ETag");
    }
    let read = conn.request("GET", "/v1/keys/a", &[], b"");
    assert_eq!((read.body.as_slice(), etag(&read)), (&b"two"[..], v2.clone()));
    let patched = conn.request("PATCH", "/v1/keys/a", &[("If-Match", &v2)], b"three");
    assert_eq!(patched.status, 200);
    let v3 = etag(&patched);
    assert_eq!(
        conn.request("DELETE", "/v1/keys/a", &[("If-Match", &v3)], b"").status,
        200
    );
    assert_eq!(conn.request("GET", "/v1/keys/a", &[], b"").status, 404);
    assert_eq!(
        conn.request("PUT", "/v1/keys/a", &[("If-Match", &v3)], b"z").status,
        412
    );
    assert_eq!(
        conn.request("PUT", "/v1/keys/a", &[("If-Match", "*")], b"z").status,
        412
    );
    assert_eq!(
        conn.request("PUT", "/v1/keys/a", &[("If-Match", "W/\"1\"")], b"z")
            .status,
        412,
        "a weak ETag never matches"
    );
    assert_eq!(
        conn.request("GET", "/v1/keys/a", &[], b"").status,
        404,
        "nothing was created"
    );
}

// Goal: conditions this server cannot read are 400 with a JSON error, and the connection
// stays usable.
fn malformed_conditions_are_400(design: &[&str]) {
    let server = Server::start(design);
    let mut conn = server.connect();
    for headers in [
        &[("If-None-Match", "\"1\"")][..],
        &[("If-Match", "\"1\", \"2\"")],
        &[("If-Match", "*"), ("If-None-Match", "*")],
    ] {
        let response = conn.request("PUT", "/v1/keys/b", headers, b"v");
        assert_eq!(response.status, 400, "{headers:?}");
        assert!(!response.error().is_empty());
        conn = server.connect();
    }
    assert_eq!(conn.request("PUT", "/v1/keys/b", &[], b"v").status, 201);
}

// Goal: 16 clients each add 1 to one counter 25 times by GET then PUT with If-Match, retrying
// on 412: the final count is exactly the number of increments (no update is lost).
fn concurrent_read_modify_write_loses_no_update(design: &[&str]) {
    const CLIENTS: usize = 16;
    const INCREMENTS: usize = 25;
    let server = Server::start(design);
    assert_eq!(server.request("PUT", "/v1/keys/counter", b"0").status, 201);
    let addr = server.addr;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                let mut conflicts = 0;
                for _ in 0..INCREMENTS {
                    loop {
                        let read = conn.request("GET", "/v1/keys/counter", &[], b"");
                        let count: u64 = String::from_utf8(read.body.clone()).unwrap().parse().unwrap();
                        let tag = etag(&read);
                        let next = (count + 1).to_string();
                        let write = conn.request("PUT", "/v1/keys/counter", &[("If-Match", &tag)], next.as_bytes());
                        match write.status {
                            200 => break,
                            412 => conflicts += 1,
                            other => panic!("unexpected {other}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let total = server.request("GET", "/v1/keys/counter", b"");
    assert_eq!(total.body, (CLIENTS * INCREMENTS).to_string().into_bytes());
    eprintln!("{conflicts} conflicts retried");
}
