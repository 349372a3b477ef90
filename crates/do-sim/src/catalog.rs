//! Static catalog: sizes, regions, distribution images and kernels the
//! simulator knows about.

/// A droplet size (plan).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizeInfo {
    pub slug: &'static str,
    pub memory: i64,
    pub vcpus: i64,
    pub disk: i64,
    pub transfer: f64,
    pub price_monthly: f64,
    pub description: &'static str,
}

pub const SIZES: &[SizeInfo] = &[
    size("s-1vcpu-512mb-10gb", 512, 1, 10, 0.5, 4.0),
    size("s-1vcpu-1gb", 1024, 1, 25, 1.0, 6.0),
    size("s-1vcpu-2gb", 2048, 1, 50, 2.0, 12.0),
    size("s-2vcpu-2gb", 2048, 2, 60, 3.0, 18.0),
    size("s-2vcpu-4gb", 4096, 2, 80, 4.0, 24.0),
    size("s-4vcpu-8gb", 8192, 4, 160, 5.0, 48.0),
    size("s-8vcpu-16gb", 16384, 8, 320, 6.0, 96.0),
];

const fn size(
    slug: &'static str,
    memory: i64,
    vcpus: i64,
    disk: i64,
    transfer: f64,
    price_monthly: f64,
) -> SizeInfo {
    SizeInfo {
        slug,
        memory,
        vcpus,
        disk,
        transfer,
        price_monthly,
        description: "Basic",
    }
}

pub fn size_by_slug(slug: &str) -> Option<&'static SizeInfo> {
    SIZES.iter().find(|s| s.slug == slug)
}

/// Regions: (slug, name).
pub const REGIONS: &[(&str, &str)] = &[
    ("nyc1", "New York 1"),
    ("nyc3", "New York 3"),
    ("sfo3", "San Francisco 3"),
    ("ams3", "Amsterdam 3"),
    ("fra1", "Frankfurt 1"),
    ("lon1", "London 1"),
    ("sgp1", "Singapore 1"),
];

pub fn region_name(slug: &str) -> &'static str {
    REGIONS
        .iter()
        .find(|(s, _)| *s == slug)
        .map(|(_, n)| *n)
        .unwrap_or("Unknown")
}

pub const REGION_FEATURES: &[&str] = &[
    "backups",
    "ipv6",
    "metadata",
    "install_agent",
    "storage",
    "image_transfer",
];

/// Public distribution images: (id, slug, distribution, name).
pub const DISTRO_IMAGES: &[(i64, &str, &str, &str)] = &[
    (160_000_001, "ubuntu-24-04-x64", "Ubuntu", "24.04 (LTS) x64"),
    (160_000_002, "ubuntu-22-04-x64", "Ubuntu", "22.04 (LTS) x64"),
    (160_000_003, "debian-12-x64", "Debian", "12 x64"),
    (160_000_004, "fedora-40-x64", "Fedora", "40 x64"),
    (160_000_005, "rockylinux-9-x64", "Rocky Linux", "9 x64"),
];

pub fn distro_by_slug(
    slug: &str,
) -> Option<&'static (i64, &'static str, &'static str, &'static str)> {
    DISTRO_IMAGES.iter().find(|d| d.1 == slug)
}

pub fn distro_by_id(id: i64) -> Option<&'static (i64, &'static str, &'static str, &'static str)> {
    DISTRO_IMAGES.iter().find(|d| d.0 == id)
}

/// Kernels available to droplets with an externally managed kernel: (id, name, version).
pub const KERNELS: &[(i64, &str, &str)] = &[
    (
        8611,
        "Ubuntu 14.04 x64 vmlinuz-3.13.0-24-generic",
        "3.13.0-24-generic",
    ),
    (
        8612,
        "Ubuntu 14.04 x64 vmlinuz-3.13.0-32-generic",
        "3.13.0-32-generic",
    ),
    (
        8613,
        "Ubuntu 14.04 x64 vmlinuz-3.13.0-37-generic",
        "3.13.0-37-generic",
    ),
];

pub fn kernel_by_id(id: i64) -> Option<&'static (i64, &'static str, &'static str)> {
    KERNELS.iter().find(|k| k.0 == id)
}

/// The 8 action types allowed by `POST /v2/droplets/actions?tag_name=`.
pub const BY_TAG_TYPES: &[&str] = &[
    "enable_backups",
    "disable_backups",
    "power_cycle",
    "shutdown",
    "power_off",
    "power_on",
    "enable_ipv6",
    "snapshot",
];

/// All 16 droplet action types.
pub const ACTION_TYPES: &[&str] = &[
    "enable_backups",
    "disable_backups",
    "change_backup_policy",
    "reboot",
    "power_cycle",
    "shutdown",
    "power_off",
    "power_on",
    "restore",
    "password_reset",
    "resize",
    "rebuild",
    "rename",
    "change_kernel",
    "enable_ipv6",
    "snapshot",
];

/// Scopes needed by a POST of `type_` in addition to `droplet:update`.
pub fn extra_scopes(type_: &str) -> &'static [&'static str] {
    match type_ {
        "restore" | "password_reset" | "rebuild" => &["droplet:admin"],
        "resize" => &["droplet:create"],
        "snapshot" => &["image:create"],
        _ => &[],
    }
}
