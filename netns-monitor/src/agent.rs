//! `netns-monitor run`: the long-running agent.
//!
//! Loads and attaches the programs, then consumes transition events until `shutdown` resolves. Dropping the
//! [`Probes`] on the way out detaches everything that is not pinned.

use std::future::Future;

use crate::{
    bpf::{BpfError, LoadOptions, Probes},
    trace::event::NsType,
};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("reading the event ring buffer failed")]
    Events(#[source] std::io::Error),
}

/// Agent settings.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    pub load: LoadOptions,
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(options: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let mut probes = Probes::load(&options.load)?;
    for mounted in &probes.mounted {
        tracing::info!(fs = mounted.fs_type, target = %mounted.target.display(), "mounted missing filesystem");
    }
    probes.forward_kernel_logs()?;
    let mut events = probes.events()?;
    tracing::info!("programs attached; watching namespace transitions");

    tokio::pin!(shutdown);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            read = events.next_batch(&mut batch) => {
                read.map_err(AgentError::Events)?;
                for event in batch.drain(..) {
                    let (old_net, new_net) = event.ns(NsType::Net);
                    tracing::info!(
                        kind = ?event.kind, pid = event.pid, tid = event.tid, comm = %event.comm,
                        ret = event.ret, old_net, new_net, "transition"
                    );
                }
            }
        }
    }
    let counters = probes.counters()?;
    tracing::info!(lost_events = counters.lost_events, "shutting down");
    Ok(())
}
