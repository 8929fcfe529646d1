//! The crate's one error type, and `Problem`: one thing wrong at one place in a file.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a deployment file, at one place in it.
///
/// Exists so that validation can report every problem at once, each in the
/// `FILE:LINE:COL: message` shape that editors and terminals make clickable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The deployment file the problem is in.
    pub file: PathBuf,
    /// 1-based line of the offending value or key.
    pub line: usize,
    /// 1-based column (in characters) of the offending value or key.
    pub column: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Everything that can go wrong reading, validating or querying a deployment file.
///
/// None of these errors changes any state: the crate only reads files and values.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read. Nothing changed.
    #[error("cannot read deployment file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why the read failed.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid deployment; every problem found is listed.
    /// Nothing changed.
    #[error("{}", render_problems(problems))]
    Invalid {
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
    /// `--node REGION/NAME` names no broker or mirror of the deployment. Nothing changed.
    #[error("no node {spec:?} in the deployment; {hint}; valid nodes: {}", valid.join(", "))]
    UnknownNode {
        /// What was asked for.
        spec: String,
        /// Why it did not match (wrong shape, unknown region, unknown name).
        hint: String,
        /// Every valid `REGION/NAME`.
        valid: Vec<String>,
    },
    /// A duration could not be parsed. Nothing changed.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// The text that was given.
        input: String,
        /// What is wrong with it and what to write instead.
        reason: String,
    },
    /// A size could not be parsed. Nothing changed.
    #[error("invalid size {input:?}: {reason}")]
    InvalidSize {
        /// The text that was given.
        input: String,
        /// What is wrong with it and what to write instead.
        reason: String,
    },
}

fn render_problems(problems: &[Problem]) -> String {
    let mut out = format!(
        "{} problem{} in the deployment file:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in problems {
        out.push('\n');
        out.push_str(&problem.to_string());
    }
    out
}
