//! Integration tests: the real library (and the real binary) against the reference
//! control plane on loopback. One test binary, modules by concern.

mod support;

mod agent;
mod binary;
mod check;
mod clouds;
mod config;
mod credentials;
mod extremes;
mod failures;
mod host_faults;
mod imds;
mod journal;
mod notify;
mod reload;
mod report;
mod storms;
mod tls;
mod unit_file;
mod verdicts;
