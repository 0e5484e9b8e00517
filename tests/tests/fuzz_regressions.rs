//! Replays every fuzz seed (`tests/fuzz/seeds/TARGET/*`) and every saved
//! crash (`tests/fuzz/regressions/TARGET/*`) through the same functions the
//! libFuzzer targets call (`tests/fuzz/src/entry.rs`, included here), on
//! stable and without cargo-fuzz. A panic names the file.

#[path = "../fuzz/src/entry.rs"]
mod entry;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir/TARGET/`, per target directory; every directory must
/// name a target.
fn inputs(dir: &str) -> Vec<(String, PathBuf)> {
    let root = fuzz_dir().join(dir);
    let mut out = Vec::new();
    let Ok(targets) = std::fs::read_dir(&root) else {
        return out;
    };
    for target in targets {
        let target = target.expect("dir entry").path();
        if !target.is_dir() {
            continue;
        }
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        assert!(
            entry::TARGETS.iter().any(|(t, _)| *t == name),
            "{}: no fuzz target named {name}",
            target.display()
        );
        for file in std::fs::read_dir(&target).expect("target dir") {
            let file = file.expect("dir entry").path();
            if file.is_file() {
                out.push((name.clone(), file));
            }
        }
    }
    out.sort();
    out
}

fn replay(files: &[(String, PathBuf)]) {
    for (target, file) in files {
        let run = entry::TARGETS
            .iter()
            .find(|(t, _)| t == target)
            .map(|(_, f)| *f)
            .expect("known target");
        let data = std::fs::read(file).expect("read input");
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{target}: {} panicked", file.display());
    }
}

#[test]
fn every_target_has_seeds_and_a_binary() {
    let seeds = inputs("seeds");
    for (target, _) in entry::TARGETS {
        assert!(
            seeds.iter().any(|(t, _)| t == target),
            "no seeds for fuzz target {target}"
        );
        let bin = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        assert!(bin.is_file(), "{} is missing", bin.display());
    }
}

#[test]
fn seeds_replay() {
    replay(&inputs("seeds"));
}

#[test]
fn regressions_replay() {
    replay(&inputs("regressions"));
}

#[test]
fn chunks_cover_the_input() {
    let data: Vec<u8> = (0..=255).collect();
    for sizes in [
        vec![],
        vec![0],
        vec![0, 0],
        vec![1],
        vec![7, 0, 3],
        vec![255, 1],
    ] {
        let pieces = entry::chunks(&data, &sizes);
        assert_eq!(pieces.concat(), data, "{sizes:?}");
    }
}
