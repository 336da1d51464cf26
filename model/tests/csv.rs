//! CSV loading: exact data on success, precise errors on bad input.

use fedledger_model::{Dataset, ModelError};

fn parse(s: &str) -> Result<Dataset, ModelError> {
    Dataset::from_csv_reader(s.as_bytes(), "label")
}

#[test]
fn missing_label_column() {
    match parse("a,b\n1,2\n") {
        Err(ModelError::CsvMissingLabel { column, header, .. }) => {
            assert_eq!(column, "label");
            assert_eq!(header, ["a", "b"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_numeric_cell_names_line_and_column() {
    let err = parse("a,b,label\n1,2,0\n3,x7,1\n").unwrap_err();
    match &err {
        ModelError::CsvNotNumber {
            line,
            column,
            value,
            ..
        } => {
            assert_eq!((*line, column.as_str(), value.as_str()), (3, "b", "x7"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        r#"<reader>: line 3, column "b": "x7" is not a number"#
    );
    assert!(matches!(
        parse("a,label\n,0\n"),
        Err(ModelError::CsvNotNumber { line: 2, .. })
    ));
}

#[test]
fn non_finite_cells() {
    for cell in ["NaN", "inf", "-infinity", "1e39"] {
        match parse(&format!("a,b,label\n1,2,0\n3,{cell},1\n")) {
            Err(ModelError::CsvNotFinite {
                line: 3,
                column,
                value,
                ..
            }) => {
                assert_eq!(column, "b");
                assert_eq!(value, cell);
            }
            other => panic!("{cell}: {other:?}"),
        }
    }
}

#[test]
fn ragged_rows() {
    assert!(matches!(
        parse("a,b,label\n1,2,0\n3,1\n"),
        Err(ModelError::CsvRagged {
            line: 3,
            expected: 3,
            found: 2,
            ..
        })
    ));
    assert!(matches!(
        parse("a,b,label\n1,2,0,9\n"),
        Err(ModelError::CsvRagged {
            line: 2,
            expected: 3,
            found: 4,
            ..
        })
    ));
}

#[test]
fn bad_labels() {
    for cell in ["-1", "1.5", "yes", ""] {
        assert!(
            matches!(
                parse(&format!("a,label\n1,{cell}\n")),
                Err(ModelError::CsvBadLabel { line: 2, .. })
            ),
            "{cell:?}"
        );
    }
}

#[test]
fn structural_errors() {
    assert!(matches!(parse(""), Err(ModelError::CsvNoHeader { .. })));
    assert!(matches!(
        parse("a,label\n"),
        Err(ModelError::CsvNoRows { .. })
    ));
    assert!(matches!(
        parse("label\n1\n"),
        Err(ModelError::CsvNoFeatures { .. })
    ));
    assert!(matches!(
        parse("a,a,label\n1,2,0\n"),
        Err(ModelError::CsvDuplicateColumn { .. })
    ));
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.csv");
    std::fs::write(&path, "a,label\n1,0\nzz,1\n").unwrap();
    let msg = Dataset::load_csv(&path, "label").unwrap_err().to_string();
    assert!(
        msg.contains("site.csv") && msg.contains("line 3") && msg.contains("\"a\""),
        "{msg}"
    );
    let missing = dir.path().join("nope.csv");
    assert!(matches!(
        Dataset::load_csv(&missing, "label"),
        Err(ModelError::Io { .. })
    ));
}

#[test]
fn write_then_load_is_exact() {
    let d = parse("x1, label ,x2\n0.1,1,-3.25e-7\n16777217,0,1e30\n\n").unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d.feature_names, ["x1", "x2"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    d.write_csv(&path).unwrap();
    let back = Dataset::load_csv(&path, "label").unwrap();
    assert_eq!(back, d);
}

#[test]
fn vendored_breast_cancer_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/breast_cancer.csv");
    let d = Dataset::load_csv(&path, "malignant").unwrap();
    assert_eq!((d.len(), d.n_features(), d.classes), (569, 30, 2));
    assert_eq!(d.class_counts(), [357, 212]);
}
