//! `reeltime-bench issuer`: publishes the benchmark's signing key as a JWKS
//! over HTTP, so that both servers verify the client's tokens exactly as
//! they would verify Clerk's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::tokens::IssuerKey;

#[derive(Debug, clap::Args)]
pub struct IssuerArgs {
    /// Address to serve `/.well-known/jwks.json` on.
    #[arg(long, default_value = "127.0.0.1:9400")]
    pub listen: SocketAddr,
    /// The PKCS#8 PEM private key, created when missing; workers sign with it.
    #[arg(long, default_value = "bench/results/issuer-key.pem")]
    pub key_file: PathBuf,
}

struct Shared {
    jwks: serde_json::Value,
    fetches: AtomicU64,
}

pub async fn run(args: IssuerArgs) -> anyhow::Result<()> {
    let key = IssuerKey::load_or_create(&args.key_file)?;
    let shared = Arc::new(Shared {
        jwks: serde_json::to_value(key.jwks())?,
        fetches: AtomicU64::new(0),
    });
    let jwks = get(|State(shared): State<Arc<Shared>>| async move {
        shared.fetches.fetch_add(1, Ordering::Relaxed);
        axum::Json(shared.jwks.clone())
    });
    // `/v1/jwks` is where `@clerk/backend` fetches the JWKS from (its Backend
    // API, `apiUrl` + `/v1/jwks`): the Socket.IO peer's JWKS mode.
    let app = Router::new()
        .route("/.well-known/jwks.json", jwks.clone())
        .route("/v1/jwks", jwks)
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the issuer to {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "reeltime-bench issuer: iss http://{addr}, JWKS http://{addr}/.well-known/jwks.json, kid {}, key {}",
        key.kid,
        args.key_file.display()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the JWKS")
}
