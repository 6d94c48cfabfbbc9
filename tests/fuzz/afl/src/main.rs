//! AFL++ entry point: `cairn-fuzz-afl TARGET` fuzzes one target of `cairn-fuzz` (`config`,
//! `metadata`, `handle`, `locators`, `manifest-section`) in AFL's persistent mode. A panic is a
//! crash to AFL; AFL's own timeout catches hangs.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(&(_, target)) = cairn_fuzz::TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = cairn_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: cairn-fuzz-afl TARGET, one of: {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
