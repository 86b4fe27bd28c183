//! Command-line arguments and the pieces `host` and `ping` share.

use std::net::Ipv4Addr;

use clap::{Args, Parser, Subcommand};
use stack_async::{ImpairConfig, StackHandle, StackOptions};
use stack_core::wire::MacAddr;
use stack_core::StackConfig;

#[derive(Parser, Debug)]
#[command(
    name = "ustack",
    version,
    about = "A userspace TCP/IPv4 stack on a TAP device"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach to a TAP device and answer ARP, ping, UDP echo (port 7) and discard
    /// (port 9), and TCP echo (7), discard (9) and chargen (19) until SIGINT/SIGTERM.
    Host(HostArgs),
    /// Send ICMP echo requests from ustack, like ping(8).
    Ping(PingArgs),
}

/// How ustack joins the link: which TAP, which address.
#[derive(Args, Debug)]
pub struct LinkArgs {
    /// Existing TAP device in the current network namespace.
    #[arg(long)]
    pub tap: String,
    /// Our address and prefix, e.g. 192.0.2.2/24.
    #[arg(long, value_parser = parse_cidr)]
    pub addr: (Ipv4Addr, u8),
    /// Default gateway.
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// Our MAC address (default: 02:00 followed by the IPv4 address).
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<MacAddr>,
    /// Forward packets not addressed to us (net.ipv4.ip_forward).
    #[arg(long)]
    pub forward: bool,
    /// Seed for the stack's randomness (default: from the OS).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Impair the link both ways, like netem (which this kernel lacks), e.g.
    /// loss=5%,dup=2%,reorder=5%,corrupt=0.5%,delay=1ms,jitter=200us,rate=100mbit,seed=7
    #[arg(long, value_parser = parse_impair)]
    pub impair: Option<ImpairConfig>,
}

#[derive(Args, Debug)]
pub struct HostArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    /// Do not run the UDP echo service (RFC 862) on port 7.
    #[arg(long)]
    pub no_udp_echo: bool,
    /// Do not run the UDP discard service (RFC 863) on port 9.
    #[arg(long)]
    pub no_udp_discard: bool,
    /// Do not run the TCP echo service (RFC 862) on port 7.
    #[arg(long)]
    pub no_tcp_echo: bool,
    /// Do not run the TCP discard service (RFC 863) on port 9.
    #[arg(long)]
    pub no_tcp_discard: bool,
    /// Do not run the TCP character generator (RFC 864) on port 19.
    #[arg(long)]
    pub no_tcp_chargen: bool,
}

#[derive(Args, Debug)]
pub struct PingArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    /// Stop after sending this many requests.
    #[arg(long, short = 'c', default_value_t = 4)]
    pub count: u32,
    /// Seconds between requests.
    #[arg(long, short = 'i', default_value_t = 1.0)]
    pub interval: f64,
    /// Data bytes per request.
    #[arg(long, short = 's', default_value_t = 56)]
    pub size: usize,
    /// Seconds to wait for replies after the last request (ping(8)'s linger time).
    #[arg(long, short = 'W', default_value_t = 10.0)]
    pub wait: f64,
    /// Print the stack's counters at the end.
    #[arg(long)]
    pub stats: bool,
    /// The address to ping.
    pub target: Ipv4Addr,
}

/// `192.0.2.2/24` -> (address, prefix length).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("\"{s}\" is not ADDRESS/PREFIX, e.g. 192.0.2.2/24"))?;
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("\"{a}\" is not an IPv4 address"))?;
    let len: u8 = p
        .parse()
        .map_err(|_| format!("prefix length \"{p}\" is not a number from 0 to 32"))?;
    if len > 32 {
        return Err(format!("prefix length {len} is over 32"));
    }
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
        return Err(format!("{addr} cannot be a host address"));
    }
    Ok((addr, len))
}

pub fn parse_impair(s: &str) -> Result<ImpairConfig, String> {
    s.parse::<ImpairConfig>().map_err(|e| e.to_string())
}

pub fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not a MAC address like 02:00:00:00:00:01"))?;
    if mac.is_multicast() || mac.is_zero() {
        return Err(format!("{mac} is not a unicast MAC address"));
    }
    Ok(mac)
}

impl LinkArgs {
    pub fn config(&self) -> StackConfig {
        let (addr, prefix_len) = self.addr;
        let mac = self.mac.unwrap_or_else(|| StackConfig::default_mac(addr));
        let mut config = StackConfig::new(mac, addr, prefix_len);
        config.gateway = self.gateway;
        config.ip_forward = self.forward;
        config
    }

    /// Start the stack on the TAP; the error is the one line to show the user.
    pub fn spawn(&self) -> Result<(StackHandle, StackConfig), String> {
        let config = self.config();
        let seed = self.seed.unwrap_or_else(os_seed);
        let options = StackOptions {
            impair: self.impair.clone(),
        };
        let handle =
            StackHandle::spawn_with(&self.tap, config.clone(), seed, options).map_err(|e| {
                let msg = e.to_string();
                msg.strip_prefix("ustack: ").unwrap_or(&msg).to_string()
            })?;
        Ok((handle, config))
    }
}

/// A seed from the OS (the stack itself never reads randomness).
fn os_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// The counters block `host` and `ping --stats` print.
pub async fn counters(handle: &StackHandle) -> std::io::Result<String> {
    let snmp = handle.call(|stack, _now| stack.snmp().render()).await?;
    let io = handle.io_stats();
    let mut text = format!("--- ustack counters ---\n{snmp}{io}");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_explains_mistakes() {
        assert_eq!(
            parse_cidr("192.0.2.2/24"),
            Ok((Ipv4Addr::new(192, 0, 2, 2), 24))
        );
        assert!(parse_cidr("192.0.2.2")
            .unwrap_err()
            .contains("ADDRESS/PREFIX"));
        assert!(parse_cidr("192.0.2.2/40").unwrap_err().contains("over 32"));
        assert!(parse_cidr("192.0.2/24")
            .unwrap_err()
            .contains("not an IPv4"));
        assert!(parse_cidr("192.0.2.2/x")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_cidr("224.0.0.1/4").is_err());
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_mac("02:00:00:00:00:01").is_ok());
        let imp = parse_impair("loss=5%,dup=2%,reorder=5%,seed=7").unwrap();
        assert_eq!(
            (imp.loss, imp.dup, imp.reorder, imp.seed),
            (0.05, 0.02, 0.05, 7)
        );
        assert!(parse_impair("loss=5").is_err(), "units are required");
        assert!(parse_impair("lost=5%").is_err());
    }

    #[test]
    fn default_mac_embeds_the_address() {
        let cli = Cli::try_parse_from([
            "ustack",
            "host",
            "--tap",
            "ustack0",
            "--addr",
            "192.0.2.2/24",
        ])
        .unwrap();
        let Command::Host(h) = cli.command else {
            panic!("host expected")
        };
        assert_eq!(h.link.config().mac.to_string(), "02:00:c0:00:02:02");
    }

    #[test]
    fn udp_services_are_on_unless_turned_off() {
        let host = |extra: &[&str]| {
            let mut args = vec!["ustack", "host", "--tap", "t0", "--addr", "192.0.2.2/24"];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).unwrap().command {
                Command::Host(h) => (h.no_udp_echo, h.no_udp_discard),
                _ => panic!("host expected"),
            }
        };
        assert_eq!(host(&[]), (false, false));
        assert_eq!(host(&["--no-udp-echo"]), (true, false));
        assert_eq!(host(&["--no-udp-discard", "--no-udp-echo"]), (true, true));
    }

    #[test]
    fn tcp_services_are_on_unless_turned_off() {
        let host = |extra: &[&str]| {
            let mut args = vec!["ustack", "host", "--tap", "t0", "--addr", "192.0.2.2/24"];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).unwrap().command {
                Command::Host(h) => (h.no_tcp_echo, h.no_tcp_discard, h.no_tcp_chargen),
                _ => panic!("host expected"),
            }
        };
        assert_eq!(host(&[]), (false, false, false));
        assert_eq!(host(&["--no-tcp-echo"]), (true, false, false));
        assert_eq!(
            host(&["--no-tcp-chargen", "--no-tcp-discard"]),
            (false, true, true)
        );
    }
}
