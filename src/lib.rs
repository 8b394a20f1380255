//! chatd: a horizontally scalable WebSocket chat server.
//!
//! Start with ARCHITECTURE.md for the map. In one sentence: a message is validated and
//! authorized by [`chat`], ordered and persisted by a [`store`], announced on a [`bus`], and
//! delivered in seq order by each node's [`hub`] to the connections of [`gateway`].

pub mod api;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod chat;
pub mod clock;
pub mod config;
pub mod domain;
pub mod gateway;
pub mod hub;
pub mod membership;
pub mod nodes;
pub mod origins;
pub mod presence;
pub mod protocol;
pub mod push;
pub mod redis;
pub mod revocation;
pub mod server;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod throttle;
