//! Selects a mutant: `COREKV_MUTANT=<name>` builds the primitives with
//! `--cfg corekv_mutant="<name>"`, for this crate only.
//!
//! Setting the cfg here rather than through `RUSTFLAGS` keeps loom and its dependencies built
//! once for every mutant: a change of `RUSTFLAGS` rebuilds the whole dependency tree.

fn main() {
    println!("cargo::rerun-if-env-changed=COREKV_MUTANT");
    if let Ok(mutant) = std::env::var("COREKV_MUTANT")
        && !mutant.is_empty()
    {
        println!("cargo::rustc-cfg=corekv_mutant=\"{mutant}\"");
    }
}
