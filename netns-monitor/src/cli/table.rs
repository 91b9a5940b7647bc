//! Aligned text tables for human output.

/// Prints `header` and `rows` with every column padded to its widest cell (two spaces between columns).
pub fn print<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) {
    let table: Vec<[String; N]> = std::iter::once(header.map(str::to_owned)).chain(rows).collect();
    let widths: Vec<usize> =
        (0..N).map(|col| table.iter().map(|r| r[col].chars().count()).max().unwrap_or(0)).collect();
    for row in &table {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}
