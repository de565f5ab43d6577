//! hookgate: a durable webhook gateway with WebAssembly transform plugins.
//!
//! The data flow is the module map: **ingest → route → store → deliver**.
//!
//! - [`api`]: the HTTP API (axum). Ingestion, saved webhook configurations, operations,
//!   health and metrics, and the web console at `/console` (its files embedded); the only
//!   place errors become HTTP responses.
//! - [`ingest`]: the ingest use-case: validate events, route them, commit each with its
//!   deliveries, hand the committed deliveries to the engine. No HTTP types.
//! - [`routing`]: validates webhook configurations and picks an event's destinations. Pure.
//! - [`store`]: the durable queue (SQLite by default): events and deliveries enqueued in one
//!   transaction, claimed with leases, finished, retried. The only hand-off from ingest to
//!   delivery.
//! - [`deliver`]: the engine: claim, build the request, run the transform plugin, sign, send,
//!   retry. Owns the HTTP client and the retry policy.
//! - [`plugin`]: the wasmtime host for transform plugins: compile cache, limits, hot reload.
//! - [`domain`]: plain types every layer shares. [`egress`]: which addresses may be reached.
//! - [`cluster`]: this process as a node: heartbeats in the store's node list and its share
//!   of every destination's cap.
//! - [`config`]: defaults → file → environment → flags. [`app`]: wires it all and runs it.
//! - [`retention`]: the background task deleting finished work past its age.
//! - [`replay`]: bulk replay jobs, queueing again what a delivery search matches.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`ops_cli`]: `hookgate tail` and `hookgate deliveries`, clients of a running gateway's API.

pub mod api;
pub mod app;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod deliver;
pub mod domain;
pub mod egress;
pub mod ingest;
pub mod metrics;
pub mod ops_cli;
pub mod plugin;
pub mod replay;
pub mod retention;
pub mod routing;
pub mod store;
