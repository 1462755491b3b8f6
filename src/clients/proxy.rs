//! Outbound proxy from the environment, read the way curl and Go read it: `HTTPS_PROXY` for https URLs,
//! `HTTP_PROXY` for http URLs (upper case first, then lower case), `NO_PROXY` for exceptions.
//!
//! `NO_PROXY` is a comma-separated list; each entry is one of
//! - `*`: no proxy for any host;
//! - a host name, `example.com`, matching it and every subdomain; a leading `.` or `*.` means the same
//!   (as curl; Go's `.example.com` would skip the bare domain);
//! - an IP address, `10.1.2.3` or `::1` (IPv6 also as `[::1]`), or a CIDR block, `10.0.0.0/8`;
//! - any of the host forms with a port, `example.com:4119` or `[::1]:8443`: only that port bypasses.
//!
//! Loopback is **not** special: a proxy applies to `localhost` and `127.0.0.1` too, unless `NO_PROXY` names
//! them (as curl and reqwest do; Go's net/http never proxies loopback). Vendor endpoints are never
//! loopback in production, and an explicit rule is easier to reason about than an implicit one.
//! Proxy URLs may carry `user:password@`; they are never logged or put into an error message.

use std::net::IpAddr;

use url::Url;

use super::{ErrorKind, VendorError};

/// The proxies to use, read once when an HTTP client is built.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    http: Option<Url>,
    https: Option<Url>,
    no_proxy: Vec<Exception>,
}

impl std::fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only where the proxies are; their URLs may hold credentials.
        let at = |u: &Option<Url>| u.as_ref().map(|u| format!("{}:{}", u.host_str().unwrap_or(""), port_of(u)));
        f.debug_struct("ProxySettings")
            .field("http", &at(&self.http))
            .field("https", &at(&self.https))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Exception {
    All,
    Domain { name: String, port: Option<u16> },
    Ip { addr: IpAddr, port: Option<u16> },
    Network { addr: IpAddr, prefix: u8 },
}

impl ProxySettings {
    /// From the process environment.
    pub fn from_env() -> Result<Self, VendorError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From variables looked up by `get` (the environment, or a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, VendorError> {
        let first = |names: [&str; 2]| names.into_iter().find_map(|n| get(n).filter(|v| !v.trim().is_empty()));
        Ok(Self {
            http: first(["HTTP_PROXY", "http_proxy"]).map(|v| proxy_url("HTTP_PROXY", &v)).transpose()?,
            https: first(["HTTPS_PROXY", "https_proxy"]).map(|v| proxy_url("HTTPS_PROXY", &v)).transpose()?,
            no_proxy: first(["NO_PROXY", "no_proxy"]).map(|v| parse_no_proxy(&v)).unwrap_or_default(),
        })
    }

    /// Whether any proxy is configured at all.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy for a request to `target`, or `None` to connect directly.
    pub fn proxy_for(&self, target: &Url) -> Option<Url> {
        let proxy = match target.scheme() {
            "https" => self.https.as_ref()?,
            "http" => self.http.as_ref()?,
            _ => return None,
        };
        let host = match target.host()? {
            url::Host::Domain(d) => Host::Name(d.trim_end_matches('.').to_ascii_lowercase()),
            url::Host::Ipv4(ip) => Host::Ip(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Host::Ip(IpAddr::V6(ip)),
        };
        let port = target.port_or_known_default()?;
        (!self.no_proxy.iter().any(|e| e.matches(&host, port))).then(|| proxy.clone())
    }
}

enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Exception {
    fn matches(&self, host: &Host, port: u16) -> bool {
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        match (self, host) {
            (Exception::All, _) => true,
            (Exception::Domain { name, port: p }, Host::Name(h)) => {
                port_ok(p) && (h == name || h.strip_suffix(name.as_str()).is_some_and(|rest| rest.ends_with('.')))
            }
            (Exception::Ip { addr, port: p }, Host::Ip(ip)) => port_ok(p) && canonical(*ip) == canonical(*addr),
            (Exception::Network { addr, prefix }, Host::Ip(ip)) => in_network(canonical(*ip), *addr, *prefix),
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn parse_no_proxy(list: &str) -> Vec<Exception> {
    list.split(',').filter_map(|entry| parse_exception(entry.trim())).collect()
}

fn parse_exception(entry: &str) -> Option<Exception> {
    let entry = entry.to_ascii_lowercase();
    if entry.is_empty() {
        return None;
    }
    if entry == "*" {
        return Some(Exception::All);
    }
    if let Some((addr, prefix)) = entry.split_once('/') {
        let addr: IpAddr = addr.trim_matches(['[', ']']).parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        return (prefix <= max).then(|| Exception::Network { addr: canonical(addr), prefix });
    }
    if let Ok(addr) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(Exception::Ip { addr: canonical(addr), port: None });
    }
    // `host:port` or `[v6]:port` (a bare IPv6 address was handled above).
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(port.parse().ok()?)),
        Some(_) => return None,
        None => (entry.as_str(), None),
    };
    if let Ok(addr) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(Exception::Ip { addr: canonical(addr), port });
    }
    let name = host.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.');
    (!name.is_empty()).then(|| Exception::Domain { name: name.to_owned(), port })
}

/// A proxy URL; `host:port` alone means `http://host:port`, as curl and Go read it.
fn proxy_url(variable: &str, value: &str) -> Result<Url, VendorError> {
    let value = value.trim();
    let with_scheme = if value.contains("://") { value.to_owned() } else { format!("http://{value}") };
    let invalid = |why: &str| {
        // Never the value itself: it may hold a user name and password.
        VendorError::new(ErrorKind::Invalid, "configure proxy", None, format!("{variable} is not usable: {why}"))
    };
    let url = Url::parse(&with_scheme).map_err(|e| invalid(&format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http:// and https:// proxies are supported"));
    }
    if url.host().is_none() {
        return Err(invalid("no host"));
    }
    Ok(url)
}

fn port_of(url: &Url) -> u16 {
    url.port_or_known_default().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> ProxySettings {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        ProxySettings::from_vars(|n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())).unwrap()
    }

    fn proxied(s: &ProxySettings, target: &str) -> Option<String> {
        s.proxy_for(&Url::parse(target).unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn scheme_selects_the_variable() {
        let s = settings(&[("HTTPS_PROXY", "http://p:3128"), ("http_proxy", "proxy2:8080")]);
        assert_eq!(proxied(&s, "https://dsm.example.com:4119/api").as_deref(), Some("http://p:3128/"));
        assert_eq!(proxied(&s, "http://dsm.example.com/api").as_deref(), Some("http://proxy2:8080/"));
        // An https URL never falls back to HTTP_PROXY.
        let s = settings(&[("HTTP_PROXY", "http://p:3128")]);
        assert_eq!(proxied(&s, "https://dsm.example.com/api"), None);
        assert!(settings(&[]).is_empty());
    }

    #[test]
    fn upper_case_wins_and_empty_values_are_unset() {
        let s = settings(&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "http://lower:2")]);
        assert_eq!(proxied(&s, "https://h/").as_deref(), Some("http://upper:1/"));
        let s = settings(&[("HTTPS_PROXY", " "), ("https_proxy", "http://lower:2")]);
        assert_eq!(proxied(&s, "https://h/").as_deref(), Some("http://lower:2/"));
        let s = settings(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "h")]);
        assert_eq!(proxied(&s, "https://h/"), None);
    }

    #[test]
    fn no_proxy_hosts_domains_and_ports() {
        let s = settings(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("NO_PROXY", "internal.example, .corp.example,*.lab.example, dsm.example.com:4119, Upper.Example"),
        ]);
        let direct = |t| proxied(&s, t).is_none();
        assert!(direct("https://internal.example/"));
        assert!(direct("https://a.b.internal.example/"), "subdomains of a bare name");
        assert!(!direct("https://notinternal.example/"), "a suffix that is not a subdomain");
        assert!(direct("https://corp.example/") && direct("https://x.corp.example/"), "leading dot");
        assert!(direct("https://lab.example/") && direct("https://x.lab.example/"), "leading *.");
        assert!(direct("https://dsm.example.com:4119/api"), "host:port, that port");
        assert!(!direct("https://dsm.example.com/api"), "host:port, another port (443)");
        assert!(direct("https://upper.example./"), "case and a trailing dot");
        assert!(!direct("https://elsewhere.example/"));
    }

    #[test]
    fn no_proxy_ips_and_networks() {
        let s = settings(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("NO_PROXY", "10.0.0.0/8, 192.168.1.7, ::1, [fd00::]/8, 172.16.0.1:8443, [fd12::1]:443, bogus/99"),
        ]);
        let direct = |t| proxied(&s, t).is_none();
        assert!(direct("https://10.20.30.40/") && !direct("https://11.0.0.1/"));
        assert!(direct("https://192.168.1.7:4119/") && !direct("https://192.168.1.8/"));
        assert!(direct("https://[::1]:8443/"));
        assert!(direct("https://[fd99::5]/") && !direct("https://[fe80::1]/"));
        assert!(direct("https://172.16.0.1:8443/") && !direct("https://172.16.0.1/"));
        assert!(direct("https://[fd12::1]/"), "[v6]:443 with the default https port");
        assert!(direct("https://[::ffff:10.1.1.1]/"), "IPv4-mapped IPv6");
    }

    #[test]
    fn loopback_is_not_special() {
        let s = settings(&[("HTTPS_PROXY", "http://p:3128")]);
        assert!(proxied(&s, "https://127.0.0.1:4119/api").is_some());
        assert!(proxied(&s, "https://localhost:4119/api").is_some());
        let s = settings(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "localhost,127.0.0.1")]);
        assert!(proxied(&s, "https://127.0.0.1:4119/api").is_none());
        assert!(proxied(&s, "https://localhost:4119/api").is_none());
    }

    #[test]
    fn star_disables_the_proxy() {
        let s = settings(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "*")]);
        assert!(proxied(&s, "https://anything.example/").is_none());
    }

    #[test]
    fn bad_proxy_urls_are_refused_without_echoing_them() {
        for bad in ["socks5://user:hunter2@p:1080", "http://user:hunter2@:1"] {
            let vars = [("HTTPS_PROXY", bad)];
            let err = ProxySettings::from_vars(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned()))
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::Invalid, "{bad}");
            assert!(err.to_string().contains("HTTPS_PROXY") && !err.to_string().contains("hunter2"), "{err}");
        }
        let s = settings(&[("HTTPS_PROXY", "http://user:hunter2@p:3128")]);
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
