//! Multi-host: per-host reports merged into one wait-for graph (`mphang merge`). `cargo test
//! multi_host` runs exactly these: live tests over network-namespace hosts, and replays.

mod docs;
mod live;
mod net;
mod replay;
mod select;
