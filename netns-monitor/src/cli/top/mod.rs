//! `netns-monitor top`: a live view of every namespace (processes, traffic rates from the agent's pinned
//! counters, who got in), refreshed every `--interval`, sortable and filterable, without the agent's HTTP.

mod model;
mod view;

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use clap::Args;
use model::{Sampler, SortKey};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::UsageError;

#[derive(Debug, Args)]
#[command(after_long_help = "\
Columns: INODE, NAME, CONTAINER, PROCS, RX/s and TX/s (bytes per second over the namespace's counted \
interfaces), RXPKT/s and TXPKT/s, IN/s (processes entering it or created in it per second) and WHO (the latest \
of them). Traffic comes from the agent's pinned counters (`netns-monitor run`; without one the columns show -), \
arrivals from what it records.

Keys: q or Esc quits (the terminal is restored), s sorts by the next column, r reverses the order, / starts a \
filter (on inode, name or container; Enter keeps it, Esc clears it), Up/Down/PgUp/PgDn/Home scroll.")]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(long, value_name = "SECS", default_value = "1")]
    interval: f64,
    /// Initial sort column: rx, tx, rx-packets, tx-packets, in, procs, name or inode.
    #[arg(long, value_name = "COLUMN", default_value = "rx")]
    sort: String,
    /// Initial filter (a substring of the inode, name or container).
    #[arg(long, value_name = "TEXT", default_value = "")]
    filter: String,
    /// Where the agent pins its maps.
    #[arg(long, value_name = "DIR", default_value = crate::bpf::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

/// Set by SIGTERM/SIGHUP: the loop ends and restores the terminal (Ctrl-C is a key in raw mode).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What the user has chosen so far.
#[derive(Debug)]
pub struct Ui {
    pub sort: SortKey,
    pub reverse: bool,
    pub filter: String,
    /// `Some(text)` while a filter is being typed.
    pub editing: Option<String>,
    pub scroll: usize,
}

pub fn top(args: TopArgs) -> anyhow::Result<ExitCode> {
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        return Err(UsageError(format!("--interval must be at least 0.1 seconds, not {}", args.interval)).into());
    }
    let sort =
        SortKey::parse(&args.sort).ok_or_else(|| UsageError(format!("unknown --sort column {:?}", args.sort)))?;
    if !std::io::stdout().is_terminal() {
        return Err(UsageError("top needs a terminal (for one-shot numbers: netns-monitor stats --who)".into()).into());
    }
    let interval = Duration::from_secs_f64(args.interval);
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let mut sampler = Sampler::new(args.pin_dir.clone());
    let mut before = sampler.sample();
    let mut ui = Ui { sort, reverse: false, filter: args.filter, editing: None, scroll: 0 };
    // ratatui::init switches to the alternate screen in raw mode and restores the terminal on a panic too.
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut now = sampler.sample();
        let mut next = Instant::now() + interval;
        loop {
            let agent = crate::bpf::persist::agent_running(&args.pin_dir);
            let mut rows = model::rates(&before, &now);
            model::arrange(&mut rows, ui.sort, ui.reverse, ui.editing.as_deref().unwrap_or(&ui.filter));
            ui.scroll = ui.scroll.min(rows.len().saturating_sub(1));
            terminal.draw(|frame| view::draw(frame, &rows, &ui, agent, now.counted, interval))?;
            // Keys until the next refresh.
            loop {
                if STOP.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
                if event::poll(wait)? {
                    if let Event::Key(key) = event::read()?
                        && key.kind == KeyEventKind::Press
                    {
                        if handle_key(&mut ui, key.code, key.modifiers) {
                            return Ok(());
                        }
                        break;
                    }
                } else if Instant::now() >= next {
                    before = std::mem::replace(&mut now, sampler.sample());
                    next = Instant::now() + interval;
                    break;
                }
            }
        }
    })();
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

/// Applies a key; `true` to quit.
fn handle_key(ui: &mut Ui, code: KeyCode, modifiers: KeyModifiers) -> bool {
    if let Some(text) = &mut ui.editing {
        match code {
            KeyCode::Enter => ui.filter = ui.editing.take().unwrap_or_default(),
            KeyCode::Esc => {
                ui.editing = None;
                ui.filter.clear();
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        ui.scroll = 0;
        return false;
    }
    match code {
        KeyCode::Char('q') | KeyCode::Esc => return true,
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return true,
        KeyCode::Char('s') => ui.sort = ui.sort.next(),
        KeyCode::Char('r') => ui.reverse = !ui.reverse,
        KeyCode::Char('/') => ui.editing = Some(String::new()),
        KeyCode::Down => ui.scroll += 1,
        KeyCode::Up => ui.scroll = ui.scroll.saturating_sub(1),
        KeyCode::PageDown => ui.scroll += 20,
        KeyCode::PageUp => ui.scroll = ui.scroll.saturating_sub(20),
        KeyCode::Home => ui.scroll = 0,
        _ => {}
    }
    false
}
