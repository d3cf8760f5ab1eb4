//! Who a client is, for the limits that count per client (connections, votes per second, voter
//! tokens issued): its address, taken from `X-Forwarded-For` only when the TCP peer is a proxy the
//! deployment trusts, and grouped so that one subscriber cannot walk around a limit by changing
//! the low bits of its address (IPv6 by /64, the prefix a home or phone line is given).

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address as the listener resolved it for one request (the TCP peer, or the
/// forwarded address when the peer is a trusted proxy: [`TrustedProxies::client_address`]). The
/// listener puts it in every request's extensions; limits count it through [`client_group`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(pub IpAddr);

/// The proxies (ingress, load balancer, the compose edge) whose `X-Forwarded-For` is believed.
/// Empty by default: the TCP peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// No proxy trusted.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client's address: the TCP `peer`, or, when the peer is trusted, the right-most address
    /// of `X-Forwarded-For` that is not itself a trusted proxy (addresses further left were written
    /// by the client and prove nothing). A malformed header counts as absent: the peer is used.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else { return peer };
            for hop in value.rsplit(',') {
                let Some(ip) = parse_hop(hop.trim()) else { return peer };
                client = canonical(ip);
                if !self.contains(client) {
                    return client;
                }
            }
        }
        client
    }
}

/// `10.0.0.0/8,192.168.1.7,fd00::/8`: networks or single addresses, comma-separated.
impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(canonical(ip)),
                    Err(_) => {
                        return Err(format!("{item:?}: expected an address or a network (CIDR), like 10.0.0.0/8"));
                    }
                },
            };
            nets.push(net);
        }
        Ok(Self(nets))
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join(","))
    }
}

/// The key a per-client limit counts by: an IPv4 address as it is, an IPv6 address by its /64
/// (an IPv4-mapped IPv6 address is the IPv4 address).
pub fn client_group(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|addr| addr.ip()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let headers = forwarded(&["1.2.3.4"]);
        assert_eq!(proxies.client_address(ip("203.0.113.9"), &headers), ip("203.0.113.9"));
        assert_eq!(TrustedProxies::none().client_address(ip("10.1.1.1"), &headers), ip("10.1.1.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.168.1.7".parse().unwrap();
        // The client wrote "6.6.6.6" itself; the edge appended the address it saw, then an
        // internal proxy appended the edge's.
        let headers = forwarded(&["6.6.6.6, 198.51.100.20", "192.168.1.7"]);
        assert_eq!(proxies.client_address(ip("10.0.0.5"), &headers), ip("198.51.100.20"));
        let headers = forwarded(&["[2001:db8::1]:443", "198.51.100.20:5000"]);
        assert_eq!(proxies.client_address(ip("10.0.0.5"), &headers), ip("198.51.100.20"));
    }

    #[test]
    fn a_malformed_or_missing_header_falls_back_to_the_peer() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(proxies.client_address(ip("10.0.0.5"), &forwarded(&["not an address"])), ip("10.0.0.5"));
        assert_eq!(proxies.client_address(ip("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"));
        assert_eq!(proxies.client_address(ip("10.0.0.5"), &forwarded(&["10.9.9.9"])), ip("10.9.9.9"));
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64_bit_prefix() {
        let a = client_group(ip("2001:db8:1:2:aaaa::1"));
        assert_eq!(a, client_group(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(a, client_group(ip("2001:db8:1:3::1")));
        assert_eq!(client_group(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(client_group(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn proxy_lists_parse_networks_and_addresses_and_name_what_is_wrong() {
        let proxies: TrustedProxies = "10.0.0.1/8,::1".parse().unwrap();
        assert_eq!(proxies.to_string(), "10.0.0.0/8,::1/128");
        assert!(proxies.contains(ip("::ffff:10.2.3.4")));
        let error = "10.0.0.0/8,proxy.local".parse::<TrustedProxies>().unwrap_err();
        assert!(error.contains("\"proxy.local\""), "{error}");
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
    }
}
