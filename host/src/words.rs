//! Words for people, written once for the library and the CLI: a count with its noun in the
//! right number ("1 checkpoint", "2 checkpoints").

/// `n` and `noun`, in the plural unless `n` is 1: "1 checkpoint", "2 checkpoints",
/// "0 attempts". `noun` is a regular English noun (the plural adds "s").
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_are_singular_only_for_one() {
        assert_eq!(count(0u64, "checkpoint"), "0 checkpoints");
        assert_eq!(count(1u32, "attempt"), "1 attempt");
        assert_eq!(
            count(2u64, "completed checkpoint"),
            "2 completed checkpoints"
        );
    }
}
