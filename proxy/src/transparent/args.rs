//! Flags of transparent mode (flattened into `meshproxy run`) and their validation into a
//! [`TransparentConfig`], kept apart from the loader so every rule is unit-testable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use serde::Serialize;

/// Port of the outbound listener that redirected connects land on (Istio's and Consul's
/// transparent proxies use the same number).
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;

/// DNS is never redirected: the mesh carries TCP service traffic, not the resolver's.
pub const DNS_PORT: u16 = 53;

/// Bad transparent-mode flags.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("--exclude-cidr {value:?}: {reason} (expected a CIDR such as 10.0.0.0/8 or fd00::/8)")]
    BadCidr { value: String, reason: &'static str },
    #[error("--{flag} needs --transparent")]
    NeedsTransparent { flag: &'static str },
    #[error("--outbound-port must not be 0")]
    ZeroOutboundPort,
}

/// An IPv4 or IPv6 prefix excluded from redirection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the prefix (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let masked = |bits: u128, width: u32| match self.prefix {
            0 => 0,
            p => bits >> (width - u32::from(p)),
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32) == masked(u32::from(ip).into(), 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128) == masked(u128::from(ip), 128)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ArgsError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ArgsError::BadCidr {
            value: value.to_string(),
            reason,
        };
        let (addr, prefix) = match value.split_once('/') {
            Some((a, p)) => (
                a,
                Some(p.parse::<u8>().map_err(|_| bad("bad prefix length"))?),
            ),
            None => (value, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(width);
        if prefix > width {
            return Err(bad("prefix length longer than the address"));
        }
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Transparent-mode flags of `meshproxy run`.
#[derive(Debug, Clone, Default, Args)]
pub struct TransparentArgs {
    /// Capture the pod's (or host's) TCP traffic with eBPF instead of upstream listeners.
    #[arg(long)]
    pub transparent: bool,
    /// cgroup v2 directory of the pod whose connects are redirected (default: the cgroup v2
    /// root, i.e. the whole host minus the proxy itself).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// The pod's network namespace (a name under /run/netns, or a path): the proxy's
    /// pod-facing sockets are created there and inbound capture (sk_lookup) attaches there.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
    /// Refuse connections to destinations that are not mesh services (default: pass through).
    #[arg(long)]
    pub mesh_destinations_only: bool,
    /// Outbound destination port never redirected (53 always is); repeatable.
    #[arg(long = "exclude-outbound-port", value_name = "PORT")]
    pub exclude_outbound_ports: Vec<u16>,
    /// Inbound port of the app not captured; repeatable.
    #[arg(long = "exclude-inbound-port", value_name = "PORT")]
    pub exclude_inbound_ports: Vec<u16>,
    /// Destination CIDR (IPv4 or IPv6) never redirected; repeatable.
    #[arg(long = "exclude-cidr", value_name = "CIDR", value_parser = Cidr::from_str)]
    pub exclude_cidrs: Vec<Cidr>,
    /// Connects by processes of this uid are never redirected; repeatable.
    #[arg(long = "exclude-uid", value_name = "UID")]
    pub exclude_uids: Vec<u32>,
    /// Who sends the pod's outbound connects to the outbound listener: `ebpf` (the cgroup
    /// programs) or `external` (e.g. an iptables REDIRECT rule; the original destination is
    /// then read with SO_ORIGINAL_DST). Inbound capture is unchanged.
    #[arg(long, value_name = "ebpf|external", default_value = "ebpf", value_parser = ["ebpf", "external"])]
    pub outbound_capture: String,
    /// Let the pod's traffic go direct when this proxy is gone. RISK: after a crash, an OOM
    /// kill or a stop, the pod's connections then bypass mutual TLS and every intention, in
    /// plaintext. Default (without it): the capture is pinned in /sys/fs/bpf/mesh/<pod-id>/
    /// and outlives the proxy, so connections are refused until a proxy serves the pod again
    /// or `meshproxy transparent remove` takes the capture away.
    #[arg(long)]
    pub fail_open: bool,
    /// Port of the outbound listener (bound on 127.0.0.1, inside the pod with --netns).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// The compiled eBPF object (default: $MESH_EBPF_OBJECT, then `mesh-ebpf` next to the
    /// meshproxy binary, then the repository's ebpf/target build).
    #[arg(long, value_name = "PATH", env = "MESH_EBPF_OBJECT")]
    pub ebpf_object: Option<PathBuf>,
}

/// Validated transparent-mode settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransparentConfig {
    pub cgroup: Option<PathBuf>,
    pub netns: Option<PathBuf>,
    pub mesh_destinations_only: bool,
    /// Sorted, deduplicated, always containing [`DNS_PORT`].
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_cidrs: Vec<Cidr>,
    pub exclude_uids: Vec<u32>,
    pub outbound_port: u16,
    pub ebpf_object: Option<PathBuf>,
    /// `--outbound-capture external`: the cgroup programs are not attached.
    pub external_outbound_capture: bool,
    /// `--fail-open`: nothing is pinned; the kernel detaches the capture when the proxy exits.
    pub fail_open: bool,
}

impl TransparentArgs {
    /// `None` when `--transparent` is off (and then no other transparent flag may be given).
    pub fn validate(self) -> Result<Option<TransparentConfig>, ArgsError> {
        if !self.transparent {
            let given = [
                ("cgroup", self.cgroup.is_some()),
                ("netns", self.netns.is_some()),
                ("mesh-destinations-only", self.mesh_destinations_only),
                (
                    "exclude-outbound-port",
                    !self.exclude_outbound_ports.is_empty(),
                ),
                (
                    "exclude-inbound-port",
                    !self.exclude_inbound_ports.is_empty(),
                ),
                ("exclude-cidr", !self.exclude_cidrs.is_empty()),
                ("exclude-uid", !self.exclude_uids.is_empty()),
                ("fail-open", self.fail_open),
            ];
            if let Some((flag, _)) = given.into_iter().find(|(_, g)| *g) {
                return Err(ArgsError::NeedsTransparent { flag });
            }
            return Ok(None);
        }
        if self.outbound_port == 0 {
            return Err(ArgsError::ZeroOutboundPort);
        }
        let mut out_ports = self.exclude_outbound_ports;
        out_ports.push(DNS_PORT);
        out_ports.sort_unstable();
        out_ports.dedup();
        let mut in_ports = self.exclude_inbound_ports;
        in_ports.sort_unstable();
        in_ports.dedup();
        Ok(Some(TransparentConfig {
            cgroup: self.cgroup,
            netns: self.netns.map(|n| netns_path(&n)),
            mesh_destinations_only: self.mesh_destinations_only,
            exclude_outbound_ports: out_ports,
            exclude_inbound_ports: in_ports,
            exclude_cidrs: self.exclude_cidrs,
            exclude_uids: self.exclude_uids,
            outbound_port: self.outbound_port,
            ebpf_object: self.ebpf_object,
            external_outbound_capture: self.outbound_capture == "external",
            fail_open: self.fail_open,
        }))
    }
}

/// `ip netns` names live under /run/netns; anything with a slash is a path already.
pub fn netns_path(value: &str) -> PathBuf {
    if value.contains('/') {
        PathBuf::from(value)
    } else {
        PathBuf::from("/run/netns").join(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_matching() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(
            !c.contains(ip("::ffff:10.1.0.1")),
            "no match across families"
        );
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(host.prefix, 32);
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        let v6: Cidr = "fd00:77::/64".parse().unwrap();
        assert!(v6.contains(ip("fd00:77::2")));
        assert!(!v6.contains(ip("fd00:78::2")));
        assert!(!v6.contains(ip("10.1.0.1")));
        let v6host: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(v6host.prefix, 128);
        assert!(v6host.contains(ip("2001:db8::1")) && !v6host.contains(ip("2001:db8::2")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::9")));
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "::1/129",
            "10.0.0.0/x",
            "",
            "fd00::/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn dns_is_always_excluded_and_flags_need_transparent() {
        let a = TransparentArgs {
            transparent: true,
            exclude_outbound_ports: vec![8443, 22, 8443],
            outbound_port: DEFAULT_OUTBOUND_PORT,
            netns: Some("pod-a".into()),
            ..Default::default()
        };
        let c = a.validate().unwrap().unwrap();
        assert_eq!(c.exclude_outbound_ports, vec![22, 53, 8443]);
        assert_eq!(c.netns, Some(PathBuf::from("/run/netns/pod-a")));
        let stray = TransparentArgs {
            exclude_uids: vec![0],
            ..Default::default()
        };
        assert!(matches!(
            stray.validate(),
            Err(ArgsError::NeedsTransparent {
                flag: "exclude-uid"
            })
        ));
        assert!(TransparentArgs::default().validate().unwrap().is_none());
        let fail_open_alone = TransparentArgs {
            fail_open: true,
            ..Default::default()
        };
        assert!(matches!(
            fail_open_alone.validate(),
            Err(ArgsError::NeedsTransparent { flag: "fail-open" })
        ));
        assert!(!c.fail_open);
    }
}
