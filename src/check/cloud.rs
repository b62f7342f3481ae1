//! The cloud, as `hostbeat run` finds it at start: `cloud`'s mode, for `auto` what
//! DMI says and from which fields, whether the metadata service answers, and the
//! identity it gives. On EC2, a session-token request that times out while the
//! address accepts connections is the hop-limit symptom of a container: named,
//! with its fix.
//!
//! Invariant: the same decision as `run` (`cloud::detect`, then one identity read);
//! nothing else is asked, and nothing is watched.

use std::time::Duration;

use tokio::time::Instant;

use super::{Finding, Report};
use crate::cloud::detect::{self, Dmi};
use crate::cloud::{Cloud, MetadataError, Provider, ec2};
use crate::config::{CloudMode, CloudSettings};

/// Checks the cloud per `settings`.
pub(super) async fn check(settings: &CloudSettings, report: &mut Report) {
    if let Some((cloud, guessed)) = decide(settings, report) {
        ask(cloud, guessed, settings, report).await;
    }
}

/// Which cloud `run` would ask, and whether `auto` guessed it; `None`: none.
fn decide(settings: &CloudSettings, report: &mut Report) -> Option<(Cloud, bool)> {
    Some(match settings.mode {
        CloudMode::Off => {
            report.push(Finding::ok(
                "cloud.off",
                "cloud = off: no metadata request, spot notices are not watched",
            ));
            return None;
        }
        CloudMode::Only(cloud) => {
            report.push(Finding::ok(
                "cloud.configured",
                format!("cloud = {}: {} is asked", cloud.name(), cloud.title()),
            ));
            (cloud, false)
        }
        CloudMode::Auto => match detect::read(&settings.dmi_dir) {
            Dmi::Names(cloud, fields) => {
                report.push(Finding::ok(
                    "cloud.detected",
                    format!(
                        "cloud = auto: DMI in {} names {} ({fields})",
                        settings.dmi_dir.display(),
                        cloud.title()
                    ),
                ));
                (cloud, true)
            }
            Dmi::NoCloud(fields) => {
                report.push(Finding::ok(
                    "cloud.none",
                    format!(
                        "cloud = auto: DMI names no cloud hostbeat knows ({fields}); `hostbeat run` makes no metadata request and watches no spot notice"
                    ),
                ));
                return None;
            }
            Dmi::Unreadable(why) => {
                report.push(Finding::ok(
                    "cloud.no_dmi",
                    format!(
                        "cloud = auto: cannot read DMI ({why}), as in a container; `hostbeat run` asks EC2's metadata service once"
                    ),
                ));
                (Cloud::Ec2, true)
            }
        },
    })
}

/// One identity read, as `run` makes at start, and what its answer means.
async fn ask(cloud: Cloud, guessed: bool, settings: &CloudSettings, report: &mut Report) {
    let url = settings.url(cloud);
    let provider = Provider::new(cloud, settings);
    let started = Instant::now();
    let identity = provider.identity().await;
    match identity {
        Ok(instance) => report.push(Finding::ok(
            "cloud.identity",
            format!(
                "{} metadata service at {url} answers: {}; its id is the logical agent id",
                cloud.title(),
                describe(&instance)
            ),
        )),
        Err(error) => {
            let took = started.elapsed();
            if cloud == Cloud::Ec2 && hop_limit_symptom(&error, took, url).await {
                report.push(Finding::fail(
                    "cloud.ec2_hop_limit",
                    format!(
                        "EC2's metadata service at {url} accepts connections, but its session-token PUT got no answer within {}",
                        crate::duration::show(ec2::PUT_TIMEOUT)
                    ),
                    "the answer is dropped after one network hop: this host reaches the service through a container's network or a bridge, and the instance's hop limit is 1; `hostbeat run` registers without the instance's identity and hears no spot notice",
                    "raise the instance's hop limit to 2: aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2 (or MetadataOptions.HttpPutResponseHopLimit in the launch template)",
                ));
                return;
            }
            let unreached = format!(
                "{} metadata service at {url} did not answer as it should: {error}",
                cloud.title()
            );
            if guessed && cloud == Cloud::Ec2 && !matches!(settings.mode, CloudMode::Only(_)) {
                // No DMI and no EC2: the ordinary case of a container elsewhere.
                report.push(Finding::ok(
                    "cloud.absent",
                    format!("{unreached}; not on EC2, so `hostbeat run` turns spot awareness off"),
                ));
            } else if guessed {
                report.push(Finding::warn(
                    "cloud.absent",
                    unreached,
                    "DMI names this cloud, but `hostbeat run` gets no answer from its metadata service, turns spot awareness off and registers without the instance's identity",
                    fix(cloud),
                ));
            } else {
                report.push(Finding::fail(
                    "cloud.unavailable",
                    unreached,
                    "`hostbeat run` registers without the instance's identity and hears no spot notice until the service answers",
                    fix(cloud),
                ));
            }
        }
    }
}

/// "instance 45200 (spot-7) (e2-standard-4, europe-west4-a, spot)".
fn describe(instance: &crate::api::wire::Instance) -> String {
    let facts: Vec<&str> = [
        &instance.instance_type,
        &instance.availability_zone,
        &instance.lifecycle,
    ]
    .into_iter()
    .flatten()
    .map(String::as_str)
    .collect();
    format!(
        "instance {}{} ({})",
        instance.id,
        instance
            .name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        facts.join(", ")
    )
}

/// The fix for a metadata service that does not answer, in its cloud's terms.
fn fix(cloud: Cloud) -> String {
    let setting = crate::config::env_var(cloud.url_setting());
    let reach = match cloud {
        Cloud::Ec2 => {
            "check that IMDSv2 is enabled for the instance (aws ec2 describe-instances, MetadataOptions.HttpEndpoint)"
        }
        Cloud::Gcp => {
            "check that metadata.google.internal resolves and that nothing but Google's server answers there"
        }
        Cloud::Azure => {
            "check that nothing (a proxy, a firewall rule, a route) stands between this host and 169.254.169.254"
        }
    };
    format!(
        "{reach}; if this is not {}, set it off: systemctl edit hostbeat, then under [Service]: Environment=HOSTBEAT_CLOUD=off (a moved service: Environment={setting}=...)",
        cloud.title()
    )
}

/// A session-token `PUT` that timed out while a TCP connection to the service
/// succeeds: the service's answer does not come back, as when the hop limit is
/// too low for the path.
async fn hop_limit_symptom(error: &MetadataError, took: Duration, url: &url::Url) -> bool {
    if !matches!(error, MetadataError::Unreachable(_)) || took < ec2::PUT_TIMEOUT {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(
        tokio::time::timeout(ec2::PUT_TIMEOUT, connect).await,
        Ok(Ok(_))
    )
}
