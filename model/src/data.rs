//! Tabular data sets from CSV, and feature standardisation.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// A labelled tabular data set held in memory, features as `f32` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Names of the feature columns, in column order.
    pub feature_names: Vec<String>,
    /// Name of the label column.
    pub label_column: String,
    /// Features, row-major: row `i` is `x[i * d .. (i + 1) * d]` with `d = feature_names.len()`.
    pub x: Vec<f32>,
    /// Class index of each row.
    pub y: Vec<u32>,
    /// Number of classes seen: `max(y) + 1` when loaded (a site may lack the highest class, so
    /// compare labels against the [`crate::ModelSpec`], not against this).
    pub classes: usize,
}

impl Dataset {
    /// Loads a CSV file with a header row. `label_column` names the integer class column
    /// (`0, 1, ...`); every other column is a feature and must hold finite numbers. Errors name
    /// the file, the line (the header is line 1) and the column.
    pub fn load_csv(path: &Path, label_column: &str) -> Result<Dataset, ModelError> {
        let file = std::fs::File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        parse_csv(
            std::io::BufReader::new(file),
            label_column,
            &path.display().to_string(),
        )
    }

    /// As [`Dataset::load_csv`], from any reader; errors call the source `<reader>`.
    pub fn from_csv_reader<R: Read>(r: R, label_column: &str) -> Result<Dataset, ModelError> {
        parse_csv(r, label_column, "<reader>")
    }

    /// As [`Dataset::from_csv_reader`], with errors naming the source `name` (the file the
    /// bytes were read from).
    pub fn from_csv_named<R: Read>(
        r: R,
        label_column: &str,
        name: &str,
    ) -> Result<Dataset, ModelError> {
        parse_csv(r, label_column, name)
    }

    /// Writes the data set as CSV: the feature columns, then the label column. Values are written
    /// in shortest round-trip form, so [`Dataset::load_csv`] reads back exactly the same data.
    pub fn write_csv(&self, path: &Path) -> Result<(), ModelError> {
        let io_err = |e: csv::Error| ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut w = csv::Writer::from_path(path).map_err(io_err)?;
        let mut header: Vec<&str> = self.feature_names.iter().map(String::as_str).collect();
        header.push(&self.label_column);
        w.write_record(&header).map_err(io_err)?;
        let d = self.n_features();
        let mut record: Vec<String> = Vec::with_capacity(d + 1);
        for (i, label) in self.y.iter().enumerate() {
            record.clear();
            record.extend(self.row(i).iter().map(|v| v.to_string()));
            record.push(label.to_string());
            debug_assert_eq!(record.len(), d + 1);
            w.write_record(&record).map_err(io_err)?;
        }
        w.flush().map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Number of feature columns.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// The features of row `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.n_features();
        &self.x[i * d..(i + 1) * d]
    }

    /// The rows with the given indices, in that order (repeats allowed); keeps `classes`.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(rows.len() * self.n_features());
        for &i in rows {
            x.extend_from_slice(self.row(i));
        }
        Dataset {
            feature_names: self.feature_names.clone(),
            label_column: self.label_column.clone(),
            x,
            y: rows.iter().map(|&i| self.y[i]).collect(),
            classes: self.classes,
        }
    }

    /// Rows per class, indexed by class, of length `max(classes, max(y) + 1)`.
    pub fn class_counts(&self) -> Vec<usize> {
        let k = self
            .y
            .iter()
            .map(|&c| c as usize + 1)
            .max()
            .unwrap_or(0)
            .max(self.classes);
        let mut counts = vec![0; k];
        for &c in &self.y {
            counts[c as usize] += 1;
        }
        counts
    }

    /// Checks that the data fits a model with `features` inputs and `classes` classes.
    pub(crate) fn check_fits(&self, features: usize, classes: usize) -> Result<(), ModelError> {
        if self.n_features() != features || self.x.len() != self.len() * features {
            return Err(ModelError::FeatureCount {
                expected: features,
                actual: self.n_features(),
            });
        }
        if let Some((row, &label)) = self
            .y
            .iter()
            .enumerate()
            .find(|(_, c)| **c as usize >= classes)
        {
            return Err(ModelError::LabelOutOfRange {
                row,
                label,
                classes,
            });
        }
        Ok(())
    }
}

fn parse_csv<R: Read>(r: R, label_column: &str, name: &str) -> Result<Dataset, ModelError> {
    let source_name = name.to_string();
    let syntax = |e: csv::Error| ModelError::CsvSyntax {
        source_name: source_name.clone(),
        line: e.position().map_or(0, |p| p.line()),
        message: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(r);
    let header: Vec<String> = reader
        .headers()
        .map_err(syntax)?
        .iter()
        .map(str::to_string)
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err(ModelError::CsvNoHeader { source_name });
    }
    for (i, h) in header.iter().enumerate() {
        if header[..i].contains(h) {
            return Err(ModelError::CsvDuplicateColumn {
                source_name,
                column: h.clone(),
            });
        }
    }
    let Some(label_idx) = header.iter().position(|h| h == label_column) else {
        return Err(ModelError::CsvMissingLabel {
            source_name,
            column: label_column.to_string(),
            header,
        });
    };
    if header.len() < 2 {
        return Err(ModelError::CsvNoFeatures {
            source_name,
            column: label_column.to_string(),
        });
    }
    let feature_names: Vec<String> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != label_idx)
        .map(|(_, h)| h.clone())
        .collect();

    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(syntax(e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != header.len() {
            // A blank line reads as one empty field: skip it like the csv crate does elsewhere.
            if record.len() == 1 && record.get(0) == Some("") {
                continue;
            }
            return Err(ModelError::CsvRagged {
                source_name,
                line,
                expected: header.len(),
                found: record.len(),
            });
        }
        for (i, cell) in record.iter().enumerate() {
            if i == label_idx {
                let label = cell.parse::<u32>().map_err(|_| ModelError::CsvBadLabel {
                    source_name: source_name.clone(),
                    line,
                    column: header[i].clone(),
                    value: cell.to_string(),
                })?;
                y.push(label);
                continue;
            }
            let v = cell.parse::<f64>().map_err(|_| ModelError::CsvNotNumber {
                source_name: source_name.clone(),
                line,
                column: header[i].clone(),
                value: cell.to_string(),
            })?;
            let v32 = v as f32;
            if !v32.is_finite() {
                return Err(ModelError::CsvNotFinite {
                    source_name,
                    line,
                    column: header[i].clone(),
                    value: cell.to_string(),
                });
            }
            x.push(v32);
        }
    }
    if y.is_empty() {
        return Err(ModelError::CsvNoRows { source_name });
    }
    let classes = y.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
    Ok(Dataset {
        feature_names,
        label_column: label_column.to_string(),
        x,
        y,
        classes,
    })
}

/// Per-feature affine standardisation `x' = (x - mean) / std`.
///
/// Either [`Standardiser::fit`] on a site's own rows (these statistics stay on the site: they are
/// not privacy-accounted and must never be sent out), or reference values the operator puts in
/// the task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Standardiser {
    /// Value subtracted from each feature.
    pub mean: Vec<f64>,
    /// Value each centred feature is divided by; 0 is treated as 1 (constant feature).
    pub std: Vec<f64>,
}

impl Standardiser {
    /// Column means and population standard deviations of `data` (mean 0, std 1 if it is empty).
    pub fn fit(data: &Dataset) -> Self {
        let d = data.n_features();
        let n = data.len();
        let mut mean = vec![0.0f64; d];
        let mut std = vec![1.0f64; d];
        if n == 0 {
            return Self { mean, std };
        }
        for i in 0..n {
            for (m, &v) in mean.iter_mut().zip(data.row(i)) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0.0f64; d];
        for i in 0..n {
            for ((s, &v), m) in var.iter_mut().zip(data.row(i)).zip(&mean) {
                let c = f64::from(v) - m;
                *s += c * c;
            }
        }
        for (s, v) in std.iter_mut().zip(&var) {
            *s = (v / n as f64).sqrt();
        }
        Self { mean, std }
    }

    /// Standardises `data` in place. Fails if the lengths do not match the data's features or
    /// a value is not finite or a std is negative; a std of 0 divides by 1.
    pub fn apply(&self, data: &mut Dataset) -> Result<(), ModelError> {
        let d = data.n_features();
        if self.mean.len() != d || self.std.len() != d {
            return Err(ModelError::InvalidStandardiser {
                reason: format!(
                    "{} means and {} stds for {d} features",
                    self.mean.len(),
                    self.std.len()
                ),
            });
        }
        for (j, (m, s)) in self.mean.iter().zip(&self.std).enumerate() {
            if !m.is_finite() || !s.is_finite() || *s < 0.0 {
                return Err(ModelError::InvalidStandardiser {
                    reason: format!("feature {j} ({}): mean {m}, std {s}", data.feature_names[j]),
                });
            }
        }
        let scale: Vec<f64> = self
            .std
            .iter()
            .map(|&s| if s == 0.0 { 1.0 } else { 1.0 / s })
            .collect();
        if d == 0 {
            return Ok(());
        }
        for row in data.x.chunks_exact_mut(d) {
            for ((v, m), k) in row.iter_mut().zip(&self.mean).zip(&scale) {
                *v = ((f64::from(*v) - m) * k) as f32;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Dataset, ModelError> {
        Dataset::from_csv_reader(s.as_bytes(), "y")
    }

    #[test]
    fn parses_label_anywhere() {
        let d = parse("a,y,b\n1,0,2\n3.5,2,-4e1\n").unwrap();
        assert_eq!(d.feature_names, ["a", "b"]);
        assert_eq!(d.x, [1.0, 2.0, 3.5, -40.0]);
        assert_eq!(d.y, [0, 2]);
        assert_eq!(d.classes, 3);
        assert_eq!(d.class_counts(), [1, 0, 1]);
        assert_eq!(d.subset(&[1, 1]).x, [3.5, -40.0, 3.5, -40.0]);
    }

    #[test]
    fn standardiser_fit_apply() {
        let mut d = parse("a,b,y\n1,5,0\n3,5,1\n").unwrap();
        let s = Standardiser::fit(&d);
        assert_eq!(s.mean, [2.0, 5.0]);
        assert_eq!(s.std, [1.0, 0.0]);
        s.apply(&mut d).unwrap();
        assert_eq!(d.x, [-1.0, 0.0, 1.0, 0.0]);
        let bad = Standardiser {
            mean: vec![0.0],
            std: vec![1.0],
        };
        assert!(matches!(
            bad.apply(&mut d),
            Err(ModelError::InvalidStandardiser { .. })
        ));
        let neg = Standardiser {
            mean: vec![0.0; 2],
            std: vec![1.0, -1.0],
        };
        assert!(neg.apply(&mut d).is_err());
    }
}
