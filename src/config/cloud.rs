//! The cloud settings: `cloud`, the three metadata URLs, `dmi_dir`,
//! `interruption_poll_interval`, `gcp_preemption_notice`, and the deprecated
//! `imds` and `imds_url`.
//!
//! Invariant: every metadata URL is plain http (the services speak nothing else) to
//! a link-local or loopback address, or to the name `metadata.google.internal`.
//! Anything else is a typo that would send metadata requests across the network.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::settings::{Field, field};
use super::{ConfigError, Layers, Origin, Warning};
use crate::cloud::Cloud;

/// Where the firmware's DMI strings are, on Linux.
pub const DEFAULT_DMI_DIR: &str = "/sys/class/dmi/id";

/// The interruption poll interval's floor: the services answer in milliseconds,
/// but a loop tighter than this is a typo.
pub const INTERRUPTION_POLL_FLOOR: Duration = Duration::from_millis(500);

/// Which cloud the agent asks, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSettings {
    /// Off, one cloud, or decided from DMI at start.
    pub mode: CloudMode,
    /// EC2's instance metadata service.
    pub ec2_url: Url,
    /// Google Cloud's metadata server.
    pub gcp_url: Url,
    /// Azure's Instance Metadata Service.
    pub azure_url: Url,
    /// Where the firmware's DMI strings are read, for `auto`.
    pub dmi_dir: PathBuf,
    /// How often EC2 and Azure are asked for notices (Google Cloud's server is
    /// asked with a hanging request instead).
    pub poll_interval: Duration,
    /// The time Google Cloud gives a preempted instance, from the moment the
    /// notice is seen: the deadline sent to the control plane.
    pub gcp_preemption_notice: Duration,
}

impl CloudSettings {
    /// The metadata service's base URL of `cloud`.
    pub fn url(&self, cloud: Cloud) -> &Url {
        match cloud {
            Cloud::Ec2 => &self.ec2_url,
            Cloud::Gcp => &self.gcp_url,
            Cloud::Azure => &self.azure_url,
        }
    }
}

/// `cloud = off | auto | ec2 | gcp | azure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudMode {
    /// No metadata request at all (the built-in default: no packet to a metadata
    /// address unless configured).
    Off,
    /// DMI names the cloud, without a packet; one metadata request confirms it.
    Auto,
    /// This cloud, always asked; trouble is logged and retried.
    Only(Cloud),
}

impl CloudMode {
    /// As written in the setting.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Auto => "auto",
            Self::Only(cloud) => cloud.name(),
        }
    }
}

pub(super) fn settings(layers: &Layers) -> Result<CloudSettings, ConfigError> {
    let ec2_field = newer_or_alias(layers, "ec2_metadata_url", "imds_url");
    let dmi_field = field(layers, "dmi_dir");
    let dmi_dir = dmi_field.absolute_path()?.ok_or_else(|| {
        dmi_field.error(
            "it is empty".to_owned(),
            format!(
                "write {}, or remove the setting",
                dmi_field.origin.assignment("dmi_dir", DEFAULT_DMI_DIR)
            ),
        )
    })?;
    Ok(CloudSettings {
        mode: mode(layers)?,
        ec2_url: metadata_url(&ec2_field, Cloud::Ec2)?,
        gcp_url: metadata_url(&field(layers, "gcp_metadata_url"), Cloud::Gcp)?,
        azure_url: metadata_url(&field(layers, "azure_metadata_url"), Cloud::Azure)?,
        dmi_dir,
        poll_interval: field(layers, "interruption_poll_interval")
            .duration_at_least(INTERRUPTION_POLL_FLOOR)?,
        gcp_preemption_notice: field(layers, "gcp_preemption_notice")
            .duration_at_least(Duration::ZERO)?,
    })
}

/// Warnings for the deprecated names where they are set: whether each still
/// decides, and the line that replaces it in that place's syntax.
pub(super) fn deprecations(layers: &Layers) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for (new, old) in [("cloud", "imds"), ("ec2_metadata_url", "imds_url")] {
        let alias = field(layers, old);
        let Some(value) = alias.value.map(str::trim) else {
            continue;
        };
        // A value `mode` would refuse is refused there; here it reads as auto.
        let same = if old == "imds" {
            imds_mode(value).map_or("auto", CloudMode::name)
        } else {
            value
        };
        let newer = field(layers, new);
        let (problem, fix) = if newer_or_alias(layers, new, old).key == old {
            let over = if newer.origin == Origin::Default {
                String::new()
            } else {
                format!(
                    ", over {}{}",
                    newer.origin.describe(new),
                    " (in the same place the old name decides, so that an old drop-in keeps its meaning)"
                )
            };
            (
                format!(
                    "{} is deprecated; it still decides, as {new} = {same}{over}",
                    alias.origin.describe(old)
                ),
                format!("replace it with {}", alias.origin.assignment(new, same)),
            )
        } else {
            (
                format!(
                    "{} is deprecated and no longer decides: {} wins",
                    alias.origin.describe(old),
                    newer.origin.describe(new)
                ),
                format!(
                    "remove it; to keep what it meant: {}",
                    newer.origin.assignment(new, same)
                ),
            )
        };
        warnings.push(Warning {
            code: "config.deprecated",
            file: match &alias.origin {
                Origin::EnvFile(path) | Origin::ConfigFile(path) => Some(path.clone()),
                _ => None,
            },
            problem,
            fix: Some(fix),
        });
    }
    warnings
}

/// `cloud`, or the deprecated `imds` where it decides (see [`newer_or_alias`]):
/// `imds = on` means `cloud = ec2`.
fn mode(layers: &Layers) -> Result<CloudMode, ConfigError> {
    let chosen = newer_or_alias(layers, "cloud", "imds");
    let value = chosen
        .value
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let mode = if chosen.key == "imds" {
        imds_mode(&value)
    } else {
        match value.as_str() {
            "off" => Some(CloudMode::Off),
            "auto" => Some(CloudMode::Auto),
            other => Cloud::named(other).map(CloudMode::Only),
        }
    };
    mode.ok_or_else(|| {
        let fix = if chosen.key == "imds" {
            format!(
                "write off, on or auto; better, replace it with {}",
                chosen.origin.assignment("cloud", "auto")
            )
        } else {
            format!(
                "write off, auto, ec2, gcp or azure, for example {}",
                chosen.origin.assignment("cloud", "auto")
            )
        };
        chosen.error(format!("{value:?} is not a cloud"), fix)
    })
}

/// What the deprecated `imds` means as a `cloud` mode: `on` is `ec2`.
fn imds_mode(value: &str) -> Option<CloudMode> {
    match value.trim().to_ascii_lowercase().as_str() {
        "off" | "false" | "no" => Some(CloudMode::Off),
        "on" | "true" | "yes" => Some(CloudMode::Only(Cloud::Ec2)),
        "auto" => Some(CloudMode::Auto),
        _ => None,
    }
}

/// The setting `key`, or its deprecated `alias` when the alias is set in the same
/// place or a higher one. Under systemd the unit's packaged `cloud=auto` and an
/// operator's old `imds=off` drop-in are both in the environment: the alias, which
/// only an operator writes, must not lose to the packaged default.
fn newer_or_alias<'a>(layers: &'a Layers, key: &'static str, alias: &'static str) -> Field<'a> {
    let newer = field(layers, key);
    let old = field(layers, alias);
    if old.value.is_some() && rank(&old.origin) >= rank(&newer.origin) {
        old
    } else {
        newer
    }
}

/// How high a place is: a higher one wins.
fn rank(origin: &Origin) -> u8 {
    match origin {
        Origin::Default => 0,
        Origin::ConfigFile(_) => 1,
        Origin::EnvFile(_) => 2,
        Origin::Environment => 3,
    }
}

/// A metadata service's URL, checked (see the module's invariant): plain http, to
/// a link-local or loopback address (or, for Google Cloud, its name), with no
/// path, query or user (each request names its own path).
fn metadata_url(field: &Field<'_>, cloud: Cloud) -> Result<Url, ConfigError> {
    let text = field.value.unwrap_or_default().trim();
    // Written under the new name, also when the deprecated one holds the typo.
    let fix = format!(
        "write {}, or remove the setting; tests use a loopback address",
        field
            .origin
            .assignment(cloud.url_setting(), cloud.default_metadata_url())
    );
    let url = Url::parse(text)
        .map_err(|e| field.error(format!("{text:?} is not a URL ({e})"), fix.clone()))?;
    let metadata_host = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_link_local() || ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip.is_unicast_link_local()
                || (cloud == Cloud::Ec2 && ip == EC2_IPV6)
        }
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || (cloud == Cloud::Gcp && d.eq_ignore_ascii_case(GCP_METADATA_HOST))
        }
        None => false,
    };
    let plain = url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.path() == "/";
    if url.scheme() != "http" || !metadata_host || !plain {
        return Err(field.error(
            format!("{text:?} is not {}'s metadata service", cloud.title()),
            fix.replace(
                "or remove",
                "(plain http to a link-local or loopback address, no path), or remove",
            ),
        ));
    }
    Ok(url)
}

/// EC2's metadata service on IPv6 (Nitro instances).
const EC2_IPV6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Google Cloud's metadata server by name (it is 169.254.169.254 too).
pub const GCP_METADATA_HOST: &str = "metadata.google.internal";
