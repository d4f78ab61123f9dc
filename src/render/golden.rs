//! Golden-file assertions for the renderers: the expected text lives in `tests/golden/`.
//! Run with `UPDATE_GOLDEN=1` to rewrite the files after an intended change, then review the diff.

use std::path::PathBuf;

/// Compares `actual` with `tests/golden/<name>`; rewrites it instead when UPDATE_GOLDEN=1.
pub fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("create golden dir");
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} unreadable ({e}); run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let first_diff = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendered text at line {}:\n--- expected\n{}\n--- actual\n{}\n\
             (UPDATE_GOLDEN=1 rewrites it if the change is intended)",
            path.display(),
            first_diff + 1,
            expected.lines().nth(first_diff).unwrap_or("<end of file>"),
            actual.lines().nth(first_diff).unwrap_or("<end of text>"),
        );
    }
}
