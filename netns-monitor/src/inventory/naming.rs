//! The one name every view gives a namespace, and the container behind it.
//!
//! `list`, `stats`, `trace` and `/metrics` all name through a [`Namer`] so that one namespace has one name
//! everywhere (see [`Netns::display_name`] for the order of preference).

use std::collections::BTreeMap;

use super::{ContainerHint, Netns, container::Containers};
use crate::manage::autoname::{self, Owner};

/// Names namespaces for one listing. Cheap to make: which `/run/netns` names `attach --all` made is read
/// now, container state when first needed.
pub struct Namer {
    containers: Containers,
    ours: BTreeMap<String, Owner>,
}

impl Default for Namer {
    fn default() -> Self {
        Self::new()
    }
}

impl Namer {
    pub fn new() -> Self {
        Self { containers: Containers::new(), ours: autoname::ours() }
    }

    /// The container whose processes use `ns` (reads /proc: a caller that names the same namespaces again and
    /// again, such as every scrape, keeps the answer while the namespace's first process stays).
    pub fn container(&self, ns: &Netns) -> Option<ContainerHint> {
        self.containers.of_pids(&ns.pids)
    }

    /// The name to show for `ns`, given its container (from [`Self::container`]).
    pub fn name(&self, ns: &Netns, container: Option<&ContainerHint>) -> Option<String> {
        ns.display_name(container, |name| self.ours.contains_key(name))
    }

    /// The name to show for `ns` and its container.
    pub fn describe(&self, ns: &Netns) -> (Option<String>, Option<ContainerHint>) {
        let container = self.container(ns);
        (self.name(ns, container.as_ref()), container)
    }
}
