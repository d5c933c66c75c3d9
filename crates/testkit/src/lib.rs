//! Real parts for reeltime's tests and benchmark: a JWKS issuer over HTTP,
//! a content server to import from, the server as a child process, and
//! clients that speak the public protocol. No mocks: each is the real thing
//! on loopback.

pub mod client;
pub mod content;
pub mod issuer;
pub mod proxy;
pub mod server;
pub mod services;
pub mod webhooks;

pub use client::{Api, Event, WAIT, WsClient};
pub use content::{ContentServer, Fetch, mp4_like};
pub use issuer::{SigningKey, TestIssuer, now};
pub use proxy::{LinkMode, TcpProxy};
pub use server::ServerProcess;
pub use services::{Nginx, Postgres, RedisServer};
pub use webhooks::{Answer, Received, SvixSigner, WebhookReceiver};
