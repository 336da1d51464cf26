//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate, each variant naming what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model specification is not usable.
    #[error("invalid model spec: {reason}")]
    InvalidSpec {
        /// What is wrong with it.
        reason: String,
    },
    /// A flat parameter vector has the wrong length for the spec.
    #[error("parameter vector has {actual} values, the model spec needs {expected}")]
    ParamLength {
        /// `ModelSpec::num_params()`.
        expected: usize,
        /// Length that was given.
        actual: usize,
    },
    /// A flat parameter vector holds NaN or an infinity.
    #[error("parameter {index} is not finite ({value})")]
    NonFiniteParam {
        /// Position in the flat vector.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// Training produced non-finite parameters (learning rate too high for the data?).
    #[error("training diverged: parameter {index} became {value} after step {step}")]
    Diverged {
        /// Position in the flat vector.
        index: usize,
        /// The offending value.
        value: f32,
        /// Optimiser step (1-based) after which it was seen.
        step: u64,
    },
    /// The data set's feature count does not match the model.
    #[error("data set has {actual} features, the model expects {expected}")]
    FeatureCount {
        /// Features the model (or standardiser) expects.
        expected: usize,
        /// Features the data set has.
        actual: usize,
    },
    /// A label is not a class of the model.
    #[error("row {row} has label {label}, but the model has only {classes} classes (0..{classes})")]
    LabelOutOfRange {
        /// 0-based row index in the data set.
        row: usize,
        /// The label.
        label: u32,
        /// Number of classes of the model.
        classes: usize,
    },
    /// The data set is empty where rows are needed.
    #[error("data set is empty: {what}")]
    EmptyData {
        /// What needed rows.
        what: &'static str,
    },
    /// A training or DP-SGD setting is out of range.
    #[error("invalid training config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// DP-SGD was requested but no noise source was given.
    #[error("DP-SGD requested (cfg.dp is set) but no GradientNoise source was given")]
    MissingNoise,
    /// A standardiser does not fit the data or holds unusable values.
    #[error("invalid standardiser: {reason}")]
    InvalidStandardiser {
        /// What is wrong.
        reason: String,
    },
    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CSV could not be parsed at all (bad UTF-8, I/O error while reading, ...).
    #[error("{source_name}: line {line}: {message}")]
    CsvSyntax {
        /// File path or `<reader>`.
        source_name: String,
        /// 1-based line number in the file (the header is line 1).
        line: u64,
        /// What the CSV reader reported.
        message: String,
    },
    /// The CSV has no header row.
    #[error("{source_name}: no header row")]
    CsvNoHeader {
        /// File path or `<reader>`.
        source_name: String,
    },
    /// Two header columns share a name.
    #[error("{source_name}: column {column:?} appears twice in the header")]
    CsvDuplicateColumn {
        /// File path or `<reader>`.
        source_name: String,
        /// The repeated name.
        column: String,
    },
    /// The label column is not in the header.
    #[error("{source_name}: no label column {column:?}; header has {header:?}")]
    CsvMissingLabel {
        /// File path or `<reader>`.
        source_name: String,
        /// The label column that was asked for.
        column: String,
        /// The header as read.
        header: Vec<String>,
    },
    /// The header has the label column only.
    #[error("{source_name}: no feature columns besides the label {column:?}")]
    CsvNoFeatures {
        /// File path or `<reader>`.
        source_name: String,
        /// The label column.
        column: String,
    },
    /// The CSV has a header but no data rows.
    #[error("{source_name}: no data rows")]
    CsvNoRows {
        /// File path or `<reader>`.
        source_name: String,
    },
    /// A data row has a different number of fields than the header.
    #[error("{source_name}: line {line}: row has {found} fields, the header has {expected}")]
    CsvRagged {
        /// File path or `<reader>`.
        source_name: String,
        /// 1-based line number in the file.
        line: u64,
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A feature cell is not a number.
    #[error("{source_name}: line {line}, column {column:?}: {value:?} is not a number")]
    CsvNotNumber {
        /// File path or `<reader>`.
        source_name: String,
        /// 1-based line number in the file.
        line: u64,
        /// Column name.
        column: String,
        /// The cell as read.
        value: String,
    },
    /// A feature cell is NaN or infinite (or overflows f32).
    #[error("{source_name}: line {line}, column {column:?}: {value:?} is not a finite number")]
    CsvNotFinite {
        /// File path or `<reader>`.
        source_name: String,
        /// 1-based line number in the file.
        line: u64,
        /// Column name.
        column: String,
        /// The cell as read.
        value: String,
    },
    /// A label cell is not a non-negative integer class index.
    #[error(
        "{source_name}: line {line}, label column {column:?}: {value:?} is not a class index (an integer 0, 1, ...)"
    )]
    CsvBadLabel {
        /// File path or `<reader>`.
        source_name: String,
        /// 1-based line number in the file.
        line: u64,
        /// The label column.
        column: String,
        /// The cell as read.
        value: String,
    },
    /// Internal: burn returned tensor data of an unexpected type or shape.
    #[error("tensor data conversion failed: {0}")]
    Tensor(String),
    /// The noise source could not add noise (the step is not taken).
    #[error("gradient noise: {0}")]
    Noise(String),
}
