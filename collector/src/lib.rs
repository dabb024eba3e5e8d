//! evident-collector: enrols agents under its own CA, receives their evidence over mutual TLS,
//! stores it append-only in SQLite with a per-agent hash chain and the agents' batch signatures,
//! and shows it to reviewers. See ARCHITECTURE.md for the map.

pub mod accounts;
pub mod actions;
pub mod api;
pub mod bundle;
pub mod ca;
pub mod chain;
pub mod cli;
pub mod config;
pub mod convert;
pub mod enroll;
pub mod evaluate;
pub mod export;
pub mod ingest;
pub mod kpi;
pub mod model;
pub mod policy;
pub mod priority;
pub mod review;
pub mod rpc_error;
pub mod server;
pub mod signature;
pub mod status;
pub mod store;
pub mod token;
pub mod transparency;
pub mod verify;
pub mod views;
pub mod web;
