//! Which cloud this is, from the firmware's DMI strings in `/sys/class/dmi/id`,
//! without a packet, as cloud-init's ds-identify decides:
//! - EC2: `sys_vendor` "Amazon EC2", or `product_name` or `bios_vendor` naming
//!   Amazon (older Xen instances say it there only);
//! - Google Cloud: `sys_vendor` "Google", or `product_name` "Google Compute Engine";
//! - Azure: `sys_vendor` "Microsoft Corporation" with `chassis_asset_tag`
//!   7783-7084-3265-9085-8269-3286-77 (Hyper-V elsewhere has the vendor, not the tag).
//!
//! The files read are world-readable (0444); the serial numbers, which are not,
//! are never read.

use std::path::Path;

use super::Cloud;

/// Azure's chassis asset tag.
pub const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";

/// The DMI fields read, in the order they are shown.
pub const FIELDS: [&str; 4] = [
    "sys_vendor",
    "product_name",
    "bios_vendor",
    "chassis_asset_tag",
];

/// What DMI says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dmi {
    /// A cloud, and the fields that name it (`sys_vendor="Google"`).
    Names(Cloud, String),
    /// No cloud hostbeat knows; what the fields say.
    NoCloud(String),
    /// No DMI to read (a container, a machine without firmware tables): why.
    Unreadable(String),
}

/// Reads the fields in `dir` and decides.
pub fn read(dir: &Path) -> Dmi {
    let mut values = Vec::new();
    let mut missing = None;
    for name in FIELDS {
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => values.push((name, String::from_utf8_lossy(&bytes).trim().to_owned())),
            Err(error) => {
                values.push((name, String::new()));
                missing.get_or_insert((name, error));
            }
        }
    }
    let field = |name: &str| {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    };
    if field("sys_vendor").is_empty()
        && let Some((name, error)) = missing
    {
        return Dmi::Unreadable(format!("{}: {error}", dir.join(name).display()));
    }
    let shown = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("{n}={:?}", super::clip(field(n))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (sys_vendor, product, bios) = (
        field("sys_vendor"),
        field("product_name"),
        field("bios_vendor"),
    );
    if sys_vendor == "Amazon EC2" {
        Dmi::Names(Cloud::Ec2, shown(&["sys_vendor"]))
    } else if product.contains("Amazon") || bios.contains("Amazon") {
        Dmi::Names(Cloud::Ec2, shown(&["product_name", "bios_vendor"]))
    } else if sys_vendor == "Google" || product == "Google Compute Engine" {
        Dmi::Names(Cloud::Gcp, shown(&["sys_vendor", "product_name"]))
    } else if sys_vendor == "Microsoft Corporation" && field("chassis_asset_tag") == AZURE_ASSET_TAG
    {
        Dmi::Names(Cloud::Azure, shown(&["sys_vendor", "chassis_asset_tag"]))
    } else {
        Dmi::NoCloud(shown(&["sys_vendor", "product_name"]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dmi(fields: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in fields {
            std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn each_cloud_is_named_by_its_fields() {
        for (fields, cloud) in [
            (&[("sys_vendor", "Amazon EC2")][..], Cloud::Ec2),
            (
                &[("sys_vendor", "Xen"), ("bios_vendor", "Amazon EC2")][..],
                Cloud::Ec2,
            ),
            (&[("sys_vendor", "Google")][..], Cloud::Gcp),
            (
                &[
                    ("sys_vendor", "x"),
                    ("product_name", "Google Compute Engine"),
                ][..],
                Cloud::Gcp,
            ),
            (
                &[
                    ("sys_vendor", "Microsoft Corporation"),
                    ("chassis_asset_tag", AZURE_ASSET_TAG),
                ][..],
                Cloud::Azure,
            ),
        ] {
            let dir = dmi(fields);
            assert!(
                matches!(read(dir.path()), Dmi::Names(c, _) if c == cloud),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn hyper_v_without_the_tag_and_a_laptop_are_no_cloud() {
        let hyper_v = dmi(&[
            ("sys_vendor", "Microsoft Corporation"),
            ("chassis_asset_tag", "None"),
        ]);
        let laptop = dmi(&[("sys_vendor", "LENOVO"), ("product_name", "20XW")]);
        for dir in [hyper_v, laptop] {
            assert!(matches!(read(dir.path()), Dmi::NoCloud(_)));
        }
        let Dmi::NoCloud(said) = read(dmi(&[("sys_vendor", "LENOVO")]).path()) else {
            panic!()
        };
        assert!(said.contains("sys_vendor=\"LENOVO\""), "{said}");
    }

    #[test]
    fn no_dmi_is_unreadable_and_says_which_file() {
        let dir = tempfile::tempdir().unwrap();
        let Dmi::Unreadable(why) = read(&dir.path().join("absent")) else {
            panic!()
        };
        assert!(why.contains("sys_vendor"), "{why}");
    }
}
