//! The cloud, as `hostbeat run` finds it at start: `cloud`'s mode, for `auto` what
//! DMI says and from which fields, whether the metadata service answers, and the
//! identity it gives. On EC2, a session-token request that times out while the
//! address accepts connections is the hop-limit symptom of a container: named,
//! with its fix.
//!
//! Invariant: the same decision as `run` (`cloud::choose`, then one identity read);
//! nothing else is asked, and nothing is watched.

use tokio::time::Instant;

use super::{Finding, Report};
use crate::cloud::{self, Choice, Cloud, MetadataError, Provider, Reason, ec2};
use crate::config::CloudSettings;

/// Checks the cloud per `settings`.
pub(super) async fn check(settings: &CloudSettings, report: &mut Report) {
    match cloud::choose(settings) {
        Choice::Off => report.push(Finding::ok(
            "cloud.off",
            "cloud = off: no metadata request, spot notices are not watched",
        )),
        Choice::NoCloud(fields) => report.push(Finding::ok(
            "cloud.none",
            format!(
                "cloud = auto: DMI in {} names no cloud hostbeat knows ({fields}); `hostbeat run` makes no metadata request and watches no spot notice",
                settings.dmi_dir.display()
            ),
        )),
        Choice::Ask(cloud, reason) => {
            let (code, said) = match &reason {
                Reason::Configured => ("cloud.configured", format!("{} is asked", cloud.title())),
                Reason::Dmi(_) => ("cloud.detected", format!(
                    "DMI in {} names {}",
                    settings.dmi_dir.display(),
                    cloud.title()
                )),
                Reason::NoDmi(_) => ("cloud.no_dmi", "as in a container: `hostbeat run` asks EC2's metadata service once".to_owned()),
            };
            report.push(Finding::ok(code, format!("{}: {said}", reason.describe(cloud))));
            ask(cloud, &reason, settings, report).await;
        }
    }
}

/// One identity read, as `run` makes at start, and what its answer means.
async fn ask(cloud: Cloud, reason: &Reason, settings: &CloudSettings, report: &mut Report) {
    let url = settings.url(cloud);
    let provider = Provider::new(cloud, settings);
    if let Provider::Ec2(client) = &provider
        && let Some(symptom) = hop_limit_symptom(client, url).await
    {
        report.push(symptom);
        return;
    }
    match provider.identity().await {
        Ok(instance) => report.push(Finding::ok(
            "cloud.identity",
            format!(
                "{} metadata service at {url} answers: instance {}; its id is the logical agent id",
                cloud.title(),
                instance.described()
            ),
        )),
        Err(error) => {
            let unreached = format!(
                "{} metadata service at {url} did not answer as it should: {error}",
                cloud.title()
            );
            match reason {
                // No DMI and no EC2: the ordinary case of a container elsewhere.
                Reason::NoDmi(_) => report.push(Finding::ok(
                    "cloud.absent",
                    format!("{unreached}; taken as not on EC2, so `hostbeat run` turns spot awareness off"),
                )),
                Reason::Dmi(_) => report.push(Finding::warn(
                    "cloud.absent",
                    unreached,
                    "DMI names this cloud, but `hostbeat run` gets no answer from its metadata service, turns spot awareness off until its next start and registers without the instance's identity",
                    fix(cloud),
                )),
                Reason::Configured => report.push(Finding::fail(
                    "cloud.unavailable",
                    unreached,
                    "`hostbeat run` registers without the instance's identity and hears no spot notice until the service answers",
                    fix(cloud),
                )),
            }
        }
    }
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

/// The session token's `PUT`, on its own: one that times out while a TCP
/// connection to the service succeeds is the hop-limit symptom (the answer does not
/// come back over the extra hop of a container's network). `None`: not that.
async fn hop_limit_symptom(client: &ec2::Client, url: &url::Url) -> Option<Finding> {
    let started = Instant::now();
    let Err(MetadataError::Unreachable(_)) = client.open_session().await else {
        return None;
    };
    if started.elapsed() < ec2::PUT_TIMEOUT {
        return None;
    }
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let connect = tokio::net::TcpStream::connect((host, port));
    let Ok(Ok(_)) = tokio::time::timeout(ec2::PUT_TIMEOUT, connect).await else {
        return None;
    };
    Some(Finding::fail(
        "cloud.ec2_hop_limit",
        format!(
            "EC2's metadata service at {url} accepts connections, but its session-token PUT got no answer within {}",
            crate::duration::show(ec2::PUT_TIMEOUT)
        ),
        "the answer is dropped after one network hop: this host reaches the service through a container's network or a bridge, and the instance's hop limit is 1; `hostbeat run` registers without the instance's identity and hears no spot notice",
        "raise the instance's hop limit to 2: aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2 (or MetadataOptions.HttpPutResponseHopLimit in the launch template)",
    ))
}
