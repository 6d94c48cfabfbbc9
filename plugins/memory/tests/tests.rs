//! The memory backend's integration tests, in-process through the safe traits of
//! `cairn-plugin-api` (the `dlopen` path is covered by the workspace harness).

// Helpers: opening instances, writing streams, committing checkpoints.
mod util;

// Output streams: sizes around the limit, pos, close rules, handles.
mod streams;
// Checkpoints: commit once, listing, resolve, dispose, with and without a checkpoint directory.
mod checkpoints;
// Savepoints: target, default target, neither.
mod savepoints;
// Options and job ids: errors name what is wrong.
mod config;
// Many threads creating streams at once.
mod concurrency;
