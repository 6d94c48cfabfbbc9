//! The host's integration tests: one binary, its modules listed here.

// Shared helpers: plugin libraries built for tests, copies into temporary directories.
mod util;

// The loader's refusals, each with its own error kind, through real shared libraries.
mod loader;

// Containment: plugin panics become errors and the host keeps working; plugin logs reach the
// host's subscriber; several plugins live side by side.
mod containment;

// The filesystem plugin through the real dlopen path: round trips, corruption, escapes, and a
// checkpoint resolved from a second process.
mod filesystem;

// The `cairn` binary: `plugins list` and `plugins info`.
mod cli;

// `cairn plugins verify` on the bundled plugins and on every misbehaving fixture.
mod verify;

// The third-party example in tests/example-plugin: built on its own, verified, found in plugins/.
mod example_plugin;

// `cairn bench storage`: every figure and ratio present and consistent; speed never asserted.
mod bench;

// `cairn config check|defaults` through the binary, and the example configs through the plugins.
mod config;

// Thousands of mutated config files: every error is one escaped line that names a line.
mod config_mutations;

// `cairn run` and `cairn checkpoints`: exactly-once, restore, failover, verify, gc, delete.
mod job;

// Every barrier mode: unaligned channel state replayed in order, at-least-once, savepoints,
// the aligned-checkpoint timeout, the in-flight bound.
mod barriers;

// `cairn bench crash` with a short N: kill -9 trials lose nothing, digests match.
mod crash;

// The object-store plugin against a real S3 server on 127.0.0.1 (SeaweedFS): conformance on
// s3://, file:// and memory://, the commit race, `cairn run` into a bucket, a killed server.
mod object_store;

// Issue 9.1 and 9.8 through the CLI: symbolic links and crafted paths never lead gc, delete,
// list, verify, show or `run --from` outside the base directory; gc finds uncommitted savepoints.
mod paths;

// A plugin built against plugin API 1.0 loads, works, and answers Unsupported for 1.1 calls.
mod compat;

// The runtime in-process: snapshot isolation, two-phase commit across failover and failed
// checkpoints, commands, and the example job of host/examples/.
mod runtime;

// `cairn run` when storage misbehaves or the job cannot run: deadlines on the coordinator's
// plugin calls, the report before the discard, a vanished job folder, a state too large.
mod recovery;

// The word count through `cairn run`: exactly once after kill -9 at random points, part files
// visible only once their checkpoint completed, non-UTF-8 input.
mod word_count;

// The `--json` contract on every command, on success and on failure (README, "JSON contract").
mod json_contract;

// Control of a running job from other processes: savepoint, stop --savepoint, cancel and status
// over the control socket, the Prometheus endpoint scraped during a run, another user refused.
mod control;
// The job lease: a second run, gc and delete refused while a job runs (filesystem and
// SeaweedFS), takeover after the ttl, `run --standby` after `kill -9`, and lineage (`--fresh`,
// ids that never repeat).
mod lease;

// Ways out of damage: a truncated `_metadata` through `run --from latest`, `gc` and
// `delete --force`.
mod damage;

// `checkpoints copy`: filesystem to SeaweedFS, restored there exactly; a failed copy commits
// nothing.
mod copy;

// Honest terminal output (issue 14.4): no colour codes in pipes, one line per failover, -q,
// signals' exit codes and summaries, `run --from` by id or relative path, fitted tables.
mod terminal;
