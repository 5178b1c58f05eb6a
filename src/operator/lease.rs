//! Leadership: one replica at a time runs the controller, elected with a Lease
//! (kube-lease-manager). Without leader election this replica always leads.

use kube::Client;
use kube_lease_manager::{DurationSeconds, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{RunError, Stop};
use crate::names::FIELD_MANAGER;
use crate::rbac::{Names, Permission, Scope};

/// The permissions of the Lease calls (see [`crate::rbac`]): kube-lease-manager reads the
/// Lease, creates it when absent, and acquires, renews and releases it with patches.
pub const RBAC: &[Permission] = &[
    Permission::new(
        "coordination.k8s.io",
        "leases",
        &["get", "patch"],
        Scope::OperatorNamespace,
    )
    .named(Names::Lease),
    Permission::new(
        "coordination.k8s.io",
        "leases",
        &["create"],
        Scope::OperatorNamespace,
    ),
];

/// Where the Lease lives and how it is held.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease's namespace (the operator's).
    pub namespace: String,
    /// The Lease's name (`--lease-name`).
    pub name: String,
    /// This replica's identity, the Lease holder while it leads.
    pub identity: String,
    /// How long a Lease is valid without renewal (`--lease-duration-seconds`).
    pub duration_seconds: u64,
}

/// Whether this replica leads, as it changes.
pub struct Leadership {
    /// `true` while this replica may reconcile.
    pub leading: watch::Receiver<bool>,
    /// The task following the Lease; it releases the Lease after [`Stop`].
    task: Option<JoinHandle<()>>,
    /// Without election, the sender is kept here: a closed channel would read as "lost".
    _fixed: Option<watch::Sender<bool>>,
}

impl Leadership {
    /// Always leading: leader election is off (`--leader-election=false`).
    pub fn always() -> Self {
        let (tx, leading) = watch::channel(true);
        Self {
            leading,
            task: None,
            _fixed: Some(tx),
        }
    }

    /// Competes for the Lease until `stop`; leadership is given up (the Lease released for a
    /// fast handover) when it is set.
    pub async fn elect(
        client: Client,
        settings: &LeaseSettings,
        stop: Stop,
    ) -> Result<Self, RunError> {
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration_seconds as DurationSeconds)
            .with_grace((settings.duration_seconds / 3).max(1) as DurationSeconds)
            .with_field_manager(FIELD_MANAGER)
            .build()
            .await
            .map_err(RunError::LeaderElection)?;
        let (tx, leading) = watch::channel(false);
        let (mut changes, handle) = manager.watch().await;
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() { break; }
                        let now_leading = *changes.borrow_and_update();
                        let _ = tx.send(now_leading);
                    }
                    () = stop.wait() => break,
                }
            }
            let _ = tx.send(false);
            // Dropping the receiver makes the manager release the Lease for a fast handover.
            drop(changes);
            let _ = handle.await;
        });
        Ok(Self {
            leading,
            task: Some(task),
            _fixed: None,
        })
    }

    /// Waits until the Lease is released (after [`Stop`]).
    pub async fn released(self) {
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}
