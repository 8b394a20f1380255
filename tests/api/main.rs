//! End-to-end tests against real nodes over real sockets. One test binary (linking is slow
//! on small machines); one module per area.

mod helpers;
mod servers;

mod admin;
mod alive;
mod auth;
mod bad_input;
mod changes;
mod cluster;
mod conformance;
mod edges;
mod fastpath;
mod fuzz;
mod hostile;
mod idp;
mod messaging;
mod ops;
mod partition;
mod proxy;
mod push;
mod push_receivers;
mod rooms;
