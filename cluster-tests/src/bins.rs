//! Where the node binaries are.

use std::path::{Path, PathBuf};

use crate::HarnessError;

/// Which executable a node runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Binary {
    /// The stock `cortex-node` (system actors only).
    #[default]
    Node,
    /// The `bank` example host (`node/examples/bank.rs`): the stock command line plus actor
    /// kinds `account`, `counter` and `register`. Built by `cargo build -p cortex-node
    /// --examples`, found under `BIN_DIR/examples/bank`.
    Bank,
    /// Any other executable with the `cortex-node` command line.
    Path(PathBuf),
}

/// The directory holding the built binaries: `$CORTEX_BIN_DIR` if set, else
/// `target/debug` of this workspace (`CARGO_MANIFEST_DIR/../target/debug`).
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("CORTEX_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"),
    }
}

/// The path of `binary` in `dir` (see [`bin_dir`]).
///
/// # Errors
/// [`HarnessError::MissingBinary`] if the file does not exist.
pub fn binary_path(binary: &Binary, dir: &Path) -> Result<PathBuf, HarnessError> {
    let path = match binary {
        Binary::Node => dir.join("cortex-node"),
        Binary::Bank => dir.join("examples").join("bank"),
        Binary::Path(p) => p.clone(),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingBinary { path })
    }
}
