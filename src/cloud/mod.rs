//! The clouds: who this instance is (its id becomes the logical agent id, its facts
//! go into registration) and whether its cloud is about to take it back, behind one
//! seam. The heartbeat loop sees only what is here: a [`Cloud`], an [`Instance`]
//! and [`Notice`]s, whichever cloud they came from.
//!
//! `detect` reads the firmware's DMI strings (no packet); `metadata` is the HTTP
//! client every cloud shares (short timeouts, no proxy, answers read with a limit);
//! `ec2`, `gcp` and `azure` speak each service; `watch` runs a cloud's watcher on
//! its own task, so that a metadata service's trouble never delays a heartbeat.
//!
//! Invariant: nothing here runs with `cloud = off`, the built-in default; tests point
//! every metadata URL at a mock on loopback, never at a real address.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api::wire::Instance;
use crate::config::{CloudMode, CloudSettings};
use crate::wheel::Grid;

pub mod azure;
pub mod detect;
pub mod ec2;
pub mod gcp;
mod metadata;
pub mod watch;

pub use metadata::MetadataError;
pub use watch::Watcher;

/// A cloud hostbeat knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Amazon EC2. The default when a status file written before other clouds
    /// were known says nothing: EC2 was the only one.
    #[default]
    Ec2,
    /// Google Cloud (Compute Engine).
    Gcp,
    /// Microsoft Azure.
    Azure,
}

impl Cloud {
    /// Every cloud, in the order `auto` considers them.
    pub const ALL: [Self; 3] = [Self::Ec2, Self::Gcp, Self::Azure];

    /// The name in settings, on the wire, in the journal (`HOSTBEAT_SOURCE`) and
    /// the metrics (`source`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ec2 => "ec2",
            Self::Gcp => "gcp",
            Self::Azure => "azure",
        }
    }

    /// The cloud called `name` in settings.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// For a person.
    pub fn title(self) -> &'static str {
        match self {
            Self::Ec2 => "EC2",
            Self::Gcp => "Google Cloud",
            Self::Azure => "Azure",
        }
    }

    /// The metadata service's address, as an operator would write it.
    pub fn default_metadata_url(self) -> &'static str {
        match self {
            Self::Ec2 | Self::Azure => "http://169.254.169.254",
            Self::Gcp => "http://metadata.google.internal",
        }
    }

    /// The setting that holds the metadata service's URL.
    pub fn url_setting(self) -> &'static str {
        match self {
            Self::Ec2 => "ec2_metadata_url",
            Self::Gcp => "gcp_metadata_url",
            Self::Azure => "azure_metadata_url",
        }
    }
}

/// What kind of notice: whether the host is going, or only warned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The instance will be reclaimed (stopped, hibernated, terminated, preempted)
    /// at the deadline: the host is `terminating` from now on.
    #[default]
    Interruption,
    /// EC2 recommends moving work off the instance; nothing is scheduled yet.
    Rebalance,
    /// Maintenance the instance survives (a live migration, a reboot, a freeze).
    Maintenance,
}

impl NoticeKind {
    /// The name in logs, the status file and the metrics (`kind`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Interruption => "spot_interruption",
            Self::Rebalance => "rebalance_recommendation",
            Self::Maintenance => "maintenance",
        }
    }

    /// Whether the host is going: its heartbeats say `terminating` from now on.
    pub fn terminating(self) -> bool {
        self == Self::Interruption
    }
}

/// A notice from a cloud, as the control plane receives it: `{source, action,
/// time}` (protocol.md section 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Which cloud said it.
    pub source: Cloud,
    /// Whether the host is going.
    pub kind: NoticeKind,
    /// What happens: EC2's `terminate`, `stop`, `hibernate` or `rebalance`; Google
    /// Cloud's `preempt`, `maintenance_terminate` or `maintenance_migrate`; Azure's
    /// `preempt`, `terminate`, `reboot`, `redeploy` or `freeze`.
    pub action: String,
    /// The deadline (when the action happens, or for a recommendation when it was
    /// made), RFC 3339.
    pub time: String,
}

/// A deadline `after` from now, RFC 3339 to the second (for a cloud that gives a
/// fixed notice rather than a time).
pub(crate) fn deadline_in(after: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + after).to_string()
}

/// At most 40 characters of outside text, for an error.
pub(crate) fn clip(text: &str) -> String {
    text.chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A fact from outside worth keeping: short, printable, no spaces.
pub(crate) fn fact(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
}

/// Which cloud to ask at start, per `cloud`: the one decision `hostbeat run` and
/// `hostbeat check` share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `cloud = off`: nothing is asked.
    Off,
    /// `cloud = auto` and DMI names no cloud hostbeat knows (what it says).
    NoCloud(String),
    /// This cloud, for this reason.
    Ask(Cloud, Reason),
}

/// Why a cloud is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `cloud` names it: trouble is logged, and the watcher keeps trying.
    Configured,
    /// `cloud = auto` and DMI names it (the fields that do): no answer means it is
    /// not there after all, and nothing more is asked.
    Dmi(String),
    /// `cloud = auto` without DMI to read (why, as in a container): EC2 is probed
    /// once, and no answer means not on EC2.
    NoDmi(String),
}

impl Reason {
    /// Whether `auto` guessed: no answer then turns spot awareness off.
    pub fn guessed(&self) -> bool {
        *self != Self::Configured
    }

    /// For a person: "cloud = gcp", "DMI says sys_vendor=\"Google\"", ...
    pub fn describe(&self, cloud: Cloud) -> String {
        match self {
            Self::Configured => format!("cloud = {}", cloud.name()),
            Self::Dmi(fields) => format!("cloud = auto, DMI says {fields}"),
            Self::NoDmi(why) => format!("cloud = auto, no DMI ({why}), so EC2 probed once"),
        }
    }
}

/// Decides per `settings`, reading DMI for `auto` (no packet).
pub fn choose(settings: &CloudSettings) -> Choice {
    match settings.mode {
        CloudMode::Off => Choice::Off,
        CloudMode::Only(cloud) => Choice::Ask(cloud, Reason::Configured),
        CloudMode::Auto => match detect::read(&settings.dmi_dir) {
            detect::Dmi::Names(cloud, fields) => Choice::Ask(cloud, Reason::Dmi(fields)),
            detect::Dmi::NoCloud(fields) => Choice::NoCloud(fields),
            detect::Dmi::Unreadable(why) => Choice::Ask(Cloud::Ec2, Reason::NoDmi(why)),
        },
    }
}

/// One cloud's metadata service, ready to ask.
#[derive(Debug, Clone)]
pub enum Provider {
    /// EC2's IMDSv2.
    Ec2(Arc<ec2::Client>),
    /// Google Cloud's metadata server.
    Gcp(Arc<gcp::Client>),
    /// Azure's Instance Metadata Service.
    Azure(Arc<azure::Client>),
}

impl Provider {
    /// A client for `cloud`'s service, at its URL in `settings`.
    pub fn new(cloud: Cloud, settings: &CloudSettings) -> Self {
        let url = settings.url(cloud).clone();
        match cloud {
            Cloud::Ec2 => Self::Ec2(Arc::new(ec2::Client::new(url))),
            Cloud::Gcp => Self::Gcp(Arc::new(gcp::Client::new(url))),
            Cloud::Azure => Self::Azure(Arc::new(azure::Client::new(url))),
        }
    }

    /// Which cloud.
    pub fn cloud(&self) -> Cloud {
        match self {
            Self::Ec2(_) => Cloud::Ec2,
            Self::Gcp(_) => Cloud::Gcp,
            Self::Azure(_) => Cloud::Azure,
        }
    }

    /// The instance's facts, for registration; the first answer also confirms
    /// that the service is there. A few requests, each within a second or two.
    pub async fn identity(&self) -> Result<Instance, MetadataError> {
        match self {
            Self::Ec2(client) => ec2::identity(client).await,
            Self::Gcp(client) => gcp::identity(client).await,
            Self::Azure(client) => azure::identity(client).await,
        }
    }

    /// Starts watching for notices on its own task until `shutdown`, its waits on
    /// `grid`.
    pub fn watch(
        &self,
        settings: &CloudSettings,
        shutdown: CancellationToken,
        grid: Grid,
    ) -> Watcher {
        let every = settings.poll_interval;
        match self {
            Self::Ec2(client) => {
                let source = ec2::Notices::new(client.clone());
                Watcher::spawn(shutdown, |out| watch::poll(source, every, grid, out))
            }
            Self::Gcp(client) => {
                let (client, notice) = (client.clone(), settings.gcp_preemption_notice);
                Watcher::spawn(shutdown, |out| gcp::watch(client, notice, every, grid, out))
            }
            Self::Azure(client) => {
                let source = azure::Events::new(client.clone());
                Watcher::spawn(shutdown, |out| watch::poll(source, every, grid, out))
            }
        }
    }
}
