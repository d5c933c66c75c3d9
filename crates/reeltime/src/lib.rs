//! reeltime: authenticated real-time progress of server-side video imports.
//!
//! A progress change flows job → [`imports::ImportService::commit`] (store, then
//! [`bus`]) → the node's [`events::Deliver`] (the [`gateway::Hub`]) → each
//! of the user's connection [`gateway::Outbox`]es → the socket; every hop
//! points down or through [`events`], never up. See `docs/architecture.md`.

pub mod app;
pub mod auth;
pub mod bus;
pub mod clerk;
pub mod config;
pub mod events;
pub mod gateway;
pub mod http;
pub mod imports;
pub mod keys_command;
pub mod media;
pub mod metrics;
pub mod net;
pub mod private_file;
pub mod store;
pub mod users;
pub mod webhooks;
