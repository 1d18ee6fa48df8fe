//! Where webhooks may go: an allow-list of host names and networks, so a producer cannot be
//! aimed at the services beside it (a cloud's metadata endpoint, an admin port) by whoever may
//! create subscriptions.
//!
//! A URL's host is checked twice: when the subscription is made (an IP literal outside the
//! list, or a name neither listed nor resolving into it, is refused at once), and at every
//! connection, by [`AllowList::resolver`], which drops resolved addresses outside the list: a
//! name that resolved into the list yesterday and elsewhere today (DNS rebinding) reaches
//! nothing.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;

use crate::error::Error;

/// The default: loopback only, so a developer's producer can call a consumer beside it, and
/// nothing else. Deployments list their receivers' names or networks.
pub const DEFAULT: &str = "localhost,127.0.0.0/8,::1/128";

/// Host names and networks webhook URLs may point to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    /// Lowercase names, allowed whatever they resolve to: the operator vouched for them.
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Parses a comma-separated list of names, addresses and networks (`10.0.0.0/8`); `*`
    /// allows everything (and should be said loudly in the logs by whoever sets it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut list = Self {
            hosts: Vec::new(),
            nets: Vec::new(),
        };
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                list.nets.push("0.0.0.0/0".parse().expect("a network"));
                list.nets.push("::/0".parse().expect("a network"));
            } else if let Ok(net) = entry.parse::<IpNet>() {
                list.nets.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else if is_host_name(entry) {
                list.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "{entry:?} is not a host name, an IP address or a network such as 10.0.0.0/8"
                ));
            }
        }
        Ok(list)
    }

    /// Whether connections to `ip` are allowed.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether `host` is a listed name.
    pub fn allows_name(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Checks a webhook URL: http or https, a host, and that host allowed (a name that is not
    /// listed must resolve, and only into allowed networks). A malformed URL is
    /// `InvalidWebhook`; a host outside the list is `WebhookTargetNotAllowed`, naming it.
    pub async fn check_url(&self, url: &str) -> Result<reqwest::Url, Error> {
        let invalid = |detail: String| Error::InvalidWebhook {
            field: "url",
            detail,
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|err| invalid(format!("{url:?} is not a URL ({err})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "{url:?}: a webhook URL is http:// or https://"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(format!(
                "{url:?}: a webhook URL carries no credentials; the signature authenticates the producer"
            )));
        }
        let port = parsed.port_or_known_default().unwrap_or(80);
        let refused = |what: String| Error::WebhookTargetNotAllowed {
            detail: format!("{url:?}: {what} is outside the allow-list (flag --webhook-allow)"),
        };
        match parsed.host() {
            None => return Err(invalid(format!("{url:?} has no host"))),
            Some(url::Host::Ipv4(ip)) if !self.allows_ip(ip.into()) => {
                return Err(refused(format!("{ip}")));
            }
            Some(url::Host::Ipv6(ip)) if !self.allows_ip(ip.into()) => {
                return Err(refused(format!("{ip}")));
            }
            Some(url::Host::Domain(name)) if !self.allows_name(name) => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                    .await
                    .map_err(|err| invalid(format!("{url:?}: {name:?} does not resolve ({err})")))?
                    .collect();
                if let Some(outside) = addrs.iter().find(|addr| !self.allows_ip(addr.ip())) {
                    return Err(refused(format!("{name} (resolves to {})", outside.ip())));
                }
            }
            Some(_) => {}
        }
        Ok(parsed)
    }

    /// A resolver for the delivery client that only hands out allowed addresses.
    pub fn resolver(self: &Arc<Self>) -> Arc<Resolver> {
        Arc::new(Resolver(Arc::clone(self)))
    }
}

fn is_host_name(entry: &str) -> bool {
    entry.len() <= 253
        && entry.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// See [`AllowList::resolver`].
pub struct Resolver(Arc<AllowList>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let list = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // Port 0: reqwest puts the URL's port on the addresses it gets.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| list.allows_name(&host) || list.allows_ip(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves only outside the webhook allow-list (flag --webhook-allow)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_loopback_and_nothing_else() {
        let list = AllowList::parse(DEFAULT).unwrap();
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(list.allows_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "169.254.169.254",
            "192.168.1.1",
            "::2",
            "0.0.0.0",
        ] {
            assert!(!list.allows_ip(ip.parse().unwrap()), "{ip}");
        }
        assert!(list.allows_name("LOCALHOST."));
        assert!(!list.allows_name("example.com"));
    }

    #[test]
    fn entries_are_names_addresses_networks_or_everything() {
        let list = AllowList::parse(" consumer , 10.1.0.0/16,192.168.0.7 ").unwrap();
        assert!(list.allows_name("consumer"));
        assert!(list.allows_ip("10.1.200.3".parse().unwrap()));
        assert!(!list.allows_ip("10.2.0.1".parse().unwrap()));
        assert!(list.allows_ip("192.168.0.7".parse().unwrap()));
        assert!(!list.allows_ip("192.168.0.8".parse().unwrap()));
        let all = AllowList::parse("*").unwrap();
        assert!(
            all.allows_ip("8.8.8.8".parse().unwrap())
                && all.allows_ip("2001:db8::1".parse().unwrap())
        );
        let err = AllowList::parse("ok,bad_host!").unwrap_err();
        assert!(err.contains("\"bad_host!\" is not a host name"), "{err}");
        assert!(AllowList::parse("10.0.0.0/33").is_err());
    }

    #[tokio::test]
    async fn urls_outside_the_list_are_refused_with_the_reason() {
        let list = AllowList::parse(DEFAULT).unwrap();
        assert!(list.check_url("http://127.0.0.1:8090/hook").await.is_ok());
        assert!(list.check_url("https://localhost/hook").await.is_ok());
        assert!(list.check_url("http://[::1]:9/").await.is_ok());
        for (url, says) in [
            (
                "http://169.254.169.254/latest",
                "169.254.169.254 is outside the allow-list (flag --webhook-allow)",
            ),
            (
                "http://[2001:db8::1]/",
                "2001:db8::1 is outside the allow-list",
            ),
        ] {
            let err = list.check_url(url).await.unwrap_err();
            assert!(
                matches!(&err, Error::WebhookTargetNotAllowed { .. }),
                "{url}: {err:?}"
            );
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
        for (url, says) in [
            ("ftp://127.0.0.1/", "is http:// or https://"),
            ("http://user:pw@127.0.0.1/", "carries no credentials"),
            ("not a url", "is not a URL"),
            ("http://no-such-host.invalid/", "does not resolve"),
        ] {
            let err = list.check_url(url).await.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidWebhook { field: "url", .. }),
                "{url}: {err:?}"
            );
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn the_resolver_hands_out_only_allowed_addresses() {
        use reqwest::dns::Resolve as _;
        let resolve = |list: &str, host: &str| {
            let list = Arc::new(AllowList::parse(list).unwrap());
            let name: reqwest::dns::Name = host.parse().unwrap();
            list.resolver().resolve(name)
        };
        let addrs: Vec<_> = resolve("127.0.0.0/8", "localhost").await.unwrap().collect();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
            "{addrs:?}"
        );
        let err = resolve("10.0.0.0/8", "localhost")
            .await
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("outside the webhook allow-list"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z0-9.*/_-]{0,12}",
            any::<IpAddr>().prop_map(|ip| ip.to_string()),
            (any::<IpAddr>(), 0u8..140).prop_map(|(ip, len)| format!("{ip}/{len}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// `--webhook-allow`: any list is read, or refused quoting the entry at fault.
        #[test]
        fn any_list_is_read_or_the_bad_entry_is_named(entries in prop::collection::vec(entry(), 0..4)) {
            let text = entries.join(",");
            match AllowList::parse(&text) {
                Ok(list) => prop_assert!(list.hosts.len() + list.nets.len() <= 2 * entries.len()),
                Err(err) => {
                    let named = entries
                        .iter()
                        .flat_map(|e| e.split(','))
                        .any(|e| err.starts_with(&format!("{:?}", e.trim())));
                    prop_assert!(named, "{err}");
                }
            }
        }

        /// A listed network allows its own addresses, whatever its prefix. (Not networks of
        /// IPv4-mapped IPv6 addresses, `::ffff:a.b.c.d`: addresses are checked as IPv4, so
        /// such an entry allows nothing.)
        #[test]
        fn a_listed_network_allows_its_addresses(ip in any::<IpAddr>(), len in 0u8..=128) {
            let len = if ip.is_ipv4() { len % 33 } else { len };
            let net = IpNet::new(ip, len).unwrap();
            let mapped = |ip: IpAddr| ip.is_ipv6() && ip.to_canonical().is_ipv4();
            prop_assume!(!mapped(ip) && !mapped(net.network()) && !mapped(net.broadcast()));
            let list = AllowList::parse(&net.to_string()).unwrap();
            prop_assert!(list.allows_ip(net.network()) && list.allows_ip(net.broadcast()));
            prop_assert!(list.allows_ip(ip));
        }
    }
}
