//! axum + tokio (one worker thread) + `RwLock<HashMap>`: the contender corekv's benchmark
//! measures itself against. `GET`/`PUT /v1/keys/{key}` and `GET /v1/readiness`, nothing else.
//! Usage: axum-contender PORT (listens on 127.0.0.1 only).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;

type Db = Arc<RwLock<HashMap<String, Bytes>>>;

async fn get_key(State(db): State<Db>, Path(key): Path<String>) -> Result<Bytes, StatusCode> {
    db.read().unwrap().get(&key).cloned().ok_or(StatusCode::NOT_FOUND)
}

async fn put_key(State(db): State<Db>, Path(key): Path<String>, body: Bytes) -> StatusCode {
    match db.write().unwrap().insert(key, body) {
        None => StatusCode::CREATED,
        Some(_) => StatusCode::OK,
    }
}

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: axum-contender PORT");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    runtime.block_on(async move {
        let db: Db = Arc::default();
        let app = Router::new()
            .route("/v1/keys/{key}", get(get_key).put(put_key))
            .route("/v1/readiness", get(|| async { "ready" }))
            .with_state(db);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}
