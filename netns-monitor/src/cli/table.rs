//! Aligned text tables for human output.

/// Prints `header` and `rows` with every column padded to its widest cell (two spaces between columns).
pub fn print<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) {
    print_rows(Some(header.map(str::to_owned).to_vec()), rows.into_iter().map(|row| row.to_vec()));
}

/// [`print`] for a number of columns chosen at run time (every row as long as the header), with or without
/// the header line.
pub fn print_rows(header: Option<Vec<String>>, rows: impl IntoIterator<Item = Vec<String>>) {
    let table: Vec<Vec<String>> = header.into_iter().chain(rows).collect();
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|col| table.iter().map(|r| r.get(col).map_or(0, |cell| cell.chars().count())).max().unwrap_or(0))
        .collect();
    for row in &table {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}
