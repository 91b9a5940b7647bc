//! Drawing `top`'s screen: a status line, the table, the keys.

use std::time::Duration;

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table},
};

use super::{
    Ui,
    model::{Row, human},
};

const HEADERS: [&str; 10] =
    ["INODE", "NAME", "CONTAINER", "PROCS", "RX/s", "TX/s", "RXPKT/s", "TXPKT/s", "IN/s", "WHO"];

pub fn draw(frame: &mut Frame<'_>, rows: &[Row], ui: &Ui, agent: bool, counted: bool, interval: Duration) {
    let [status, table, keys] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1), Constraint::Length(1)]).areas(frame.area());
    let source = match (agent, counted) {
        (true, _) => "agent running",
        (false, true) => "no agent: counters as the last one left them",
        (false, false) => "no agent counters (netns-monitor run)",
    };
    let filter = match &ui.editing {
        Some(text) => format!("  filter: /{text}_"),
        None if !ui.filter.is_empty() => format!("  filter: {}", ui.filter),
        None => String::new(),
    };
    let order = if ui.reverse { "reversed" } else { "" };
    let line = format!(
        "netns-monitor top  {} namespaces  {source}  sort: {} {order}  every {:.1}s{filter}",
        rows.len(),
        ui.sort.column(),
        interval.as_secs_f64()
    );
    frame.render_widget(Paragraph::new(Line::from(line)), status);

    let header = TableRow::new(HEADERS.map(|h| {
        let style = if h == ui.sort.column() { Style::new().add_modifier(Modifier::REVERSED) } else { Style::new() };
        Cell::from(h).style(style)
    }))
    .style(Style::new().add_modifier(Modifier::BOLD));
    let body = rows.iter().skip(ui.scroll).map(|row| {
        let rate = |i: usize| row.rates.map_or_else(|| "-".to_owned(), |r| human(r[i]));
        TableRow::new([
            row.inode.to_string(),
            row.name.clone(),
            row.container.clone(),
            row.procs.to_string(),
            rate(0),
            rate(1),
            rate(2),
            rate(3),
            human(row.arrivals_per_second),
            row.who.clone(),
        ])
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Length(24),
        Constraint::Length(22),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Min(10),
    ];
    frame.render_widget(Table::new(body, widths).header(header), table);
    let help = "q quit  s sort  r reverse  / filter  Up/Down scroll";
    frame.render_widget(Paragraph::new(help), keys);
}
