//! CSV datasets: one sample per row, comma-separated numbers, the label in one column
//! ([`LabelColumn`]: first by default, as in the common MNIST CSV files).
//!
//! * The first line is a header, and skipped, when any of its fields is not a number.
//! * Empty lines are skipped; every other row must have the same number of fields.
//! * Values are parsed strictly (finite decimal numbers, no empty fields); an error names
//!   `file:line:column`.
//! * Normalization follows the IDX and npy paths: when every value (the label aside) is
//!   written as an integer, the file holds integer data and values are divided by 255
//!   (bytes become `[0, 1]`); if any value has a decimal point or exponent, the file is
//!   float data and used as is.
//! * Labels are integers `>= 0` (`3`, or `3.0` as written by `np.savetxt`).

use super::{Dataset, LabelColumn, MAX_LABEL};
use crate::TrainError;
use std::path::Path;

/// Loads a CSV file for samples of shape `sample`, keeping at most `limit` rows.
pub fn load(
    path: &Path,
    sample: &[usize],
    label: LabelColumn,
    limit: Option<usize>,
) -> Result<Dataset, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Data {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse(&text, &path.display().to_string(), sample, label, limit)
}

/// Parses CSV `text` (from `file`, named in errors) for samples of shape `sample`.
pub fn parse(
    text: &str,
    file: &str,
    sample: &[usize],
    label: LabelColumn,
    limit: Option<usize>,
) -> Result<Dataset, TrainError> {
    let at = |line: usize, col: Option<usize>, message: String| TrainError::Data {
        file: match col {
            Some(c) => format!("{file}:{line}:{c}"),
            None => format!("{file}:{line}"),
        },
        message,
    };
    let per: usize = sample.iter().product();
    let limit = limit.unwrap_or(usize::MAX);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut all_integers = true;
    // (fields per row, the line that set it, whether that line was a header)
    let mut width: Option<(usize, usize, bool)> = None;
    for (n, raw) in text.lines().enumerate() {
        if labels.len() >= limit {
            break;
        }
        let line = n + 1;
        let row = raw.strip_suffix('\r').unwrap_or(raw);
        if row.trim().is_empty() {
            continue;
        }
        let fields = split(row);
        if width.is_none() && fields.iter().any(|(_, f)| number(f).is_none()) {
            width = Some((fields.len(), line, true));
            continue;
        }
        let (w, first, header) = *width.get_or_insert((fields.len(), line, false));
        if fields.len() != w {
            let what = if header {
                "the header"
            } else {
                "the first row"
            };
            return Err(at(
                line,
                None,
                format!("{} fields, {what} (line {first}) has {w}", fields.len()),
            ));
        }
        if w != per + 1 {
            return Err(at(
                line,
                None,
                format!(
                    "{w} fields: a label and {} values, the model input {sample:?} needs {per} values",
                    w.saturating_sub(1)
                ),
            ));
        }
        let li = match label {
            LabelColumn::First => 0,
            LabelColumn::Last => w - 1,
            LabelColumn::Index(i) if i < w => i,
            LabelColumn::Index(i) => {
                return Err(at(
                    line,
                    None,
                    format!("label column {} but rows have {w} fields", i + 1),
                ))
            }
        };
        for (i, &(col, f)) in fields.iter().enumerate() {
            let Some(v) = number(f) else {
                let message = if f.trim().is_empty() {
                    "empty field".to_string()
                } else {
                    format!("'{}' is not a finite number", f.trim())
                };
                return Err(at(line, Some(col), message));
            };
            if i == li {
                let l = Some(v)
                    .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v <= MAX_LABEL as f64)
                    .ok_or_else(|| {
                        at(
                            line,
                            Some(col),
                            format!("label '{}' is not an integer in 0..={MAX_LABEL}", f.trim()),
                        )
                    })?;
                labels.push(l as usize);
            } else {
                all_integers &= is_integer(f);
                // Parsed as f32 directly: correctly rounded, so a float32 written in
                // shortest round-trip notation reads back bit-exactly.
                match f.trim().parse::<f32>() {
                    Ok(x) if x.is_finite() => images.push(x),
                    _ => {
                        return Err(at(
                            line,
                            Some(col),
                            format!("'{}' is out of float32 range", f.trim()),
                        ))
                    }
                }
            }
        }
    }
    if labels.is_empty() {
        return Err(TrainError::Data {
            file: file.to_string(),
            message: "no data rows".into(),
        });
    }
    if all_integers {
        for v in &mut images {
            *v /= 255.0;
        }
    }
    Ok(Dataset {
        images,
        labels,
        sample: sample.to_vec(),
    })
}

/// The fields of `row` with the 1-based column where each starts.
fn split(row: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut start, mut start_col) = (0, 1);
    for (col, (i, c)) in row.char_indices().enumerate() {
        if c == ',' {
            out.push((start_col, &row[start..i]));
            (start, start_col) = (i + 1, col + 2);
        }
    }
    out.push((start_col, &row[start..]));
    out
}

/// A finite number in decimal notation (`inf`, `nan` and empty fields are refused).
fn number(field: &str) -> Option<f64> {
    let f = field.trim();
    let decimal = !f.is_empty()
        && f.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    f.parse::<f64>().ok().filter(|v| decimal && v.is_finite())
}

/// Written as an integer: optional sign and digits only.
fn is_integer(field: &str) -> bool {
    let f = field.trim();
    let digits = f.strip_prefix(['+', '-']).unwrap_or(f);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str, label: LabelColumn) -> Dataset {
        parse(text, "d.csv", &[2], label, None).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text, "d.csv", &[2], LabelColumn::First, None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn integer_files_scale_like_idx_float_files_do_not() {
        let d = parse_ok("label,a,b\n3,0,255\r\n\n1,51,102\n", LabelColumn::First);
        assert_eq!(d.labels, [3, 1]);
        assert_eq!(d.images, [0.0, 1.0, 0.2, 0.4]);
        let d = parse_ok("0.5,-2,4\n1.5e0, 3 ,2.0\n", LabelColumn::Last);
        assert_eq!(d.labels, [4, 2]);
        assert_eq!(d.images, [0.5, -2.0, 1.5, 3.0]);
        let d = parse_ok("0.5,7,-2\n", LabelColumn::Index(1));
        assert_eq!((d.labels[0], &d.images[..]), (7, &[0.5f32, -2.0][..]));
        let d = parse(
            "1,2,3\n4,5,6\n7,8,9\n",
            "d.csv",
            &[2],
            LabelColumn::First,
            Some(2),
        )
        .unwrap();
        assert_eq!(d.labels, [1, 4]);
    }

    #[test]
    fn bad_rows_name_file_line_and_column() {
        let cases = [
            (
                "1,2,3\n4,5\n",
                "d.csv:2: 2 fields, the first row (line 1) has 3",
            ),
            (
                "a,b,c\n1,2,3\n4,5,6,7\n",
                "d.csv:3: 4 fields, the header (line 1) has 3",
            ),
            (
                "1,2,3\n4, x7 ,6\n",
                "d.csv:2:3: 'x7' is not a finite number",
            ),
            ("1,2,3\n4,5,\n", "d.csv:2:5: empty field"),
            (
                "1,2,3\n4,inf,6\n",
                "d.csv:2:3: 'inf' is not a finite number",
            ),
            ("1,2,3\n-1,5,6\n", "d.csv:2:1: label '-1' is not an integer"),
            ("2.5,2,3\n", "d.csv:1:1: label '2.5' is not an integer"),
            (
                "1,2,3,4\n",
                "d.csv:1: 4 fields: a label and 3 values, the model input [2] needs 2",
            ),
            ("h1,h2,h3\n\n", "d.csv: no data rows"),
        ];
        for (text, want) in cases {
            let e = parse_err(text);
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        let e = parse("1,2,3\n", "d.csv", &[2], LabelColumn::Index(5), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("label column 6"), "{e}");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(split("é,ab, c"), [(1, "é"), (3, "ab"), (6, " c")]);
        assert!(number("1e3").is_some() && number("-.5").is_some());
        assert!(number("nan").is_none() && number("0x10").is_none() && number(" ").is_none());
        assert!(is_integer("-12") && !is_integer("1.0") && !is_integer("1e2"));
    }
}
