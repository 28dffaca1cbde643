//! A TCP connection to a name, as RFC 8305 ("Happy Eyeballs v2") describes (D90): every
//! address the name has, IPv6 and IPv4 interleaved with IPv6 first, each attempt started
//! [`Dialer::delay`] after the one before, or at once when an attempt fails, and the first to
//! connect wins. A host whose IPv6 path black-holes costs that delay, not a connect
//! timeout.
//!
//! Written here rather than taken from hyper-util's `HttpConnector`, which races the same way
//! but says only "dns error" or "tcp connect error": the user is told which it was and why.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tether_core::TransportError;
use tokio::net::TcpStream;

use super::Failure;

/// RFC 8305's recommended "Connection Attempt Delay".
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// How names become connections: the app's fixed addresses for some names (checked first),
/// else the system's resolver.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    pub(crate) resolve: Vec<(String, Vec<IpAddr>)>,
    pub(crate) delay: Duration,
}

impl Dialer {
    /// Every address of `host`, in the order RFC 8305 tries them.
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
        let bare = host.trim_matches(|c| c == '[' || c == ']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some((_, ips)) = self
            .resolve
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(bare))
        {
            if ips.is_empty() {
                return Err(Failure::new(
                    TransportError::NameLookup,
                    format!(
                        "the name {bare} has no address (the app's fixed addresses for it are none)"
                    ),
                ));
            }
            return Ok(interleave(
                ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
            ));
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| {
                Failure::new(
                    TransportError::NameLookup,
                    format!("the name {bare} did not resolve ({e})"),
                )
            })?
            .collect();
        if found.is_empty() {
            return Err(Failure::new(
                TransportError::NameLookup,
                format!("the name {bare} has no address"),
            ));
        }
        Ok(interleave(found))
    }

    /// A connection to `host:port`: its addresses raced.
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, Failure> {
        let addrs = self.resolve(host, port).await?;
        race(&addrs, self.delay).await.map_err(|e| {
            Failure::new(
                TransportError::Connect,
                format!("could not connect to {host}:{port} ({e})"),
            )
        })
    }
}

/// IPv6 first, then the families alternating (RFC 8305 section 4), each family in the
/// resolver's order.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv6);
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// The first of `addrs` to connect, each attempt started `delay` after the one before or as
/// soon as an attempt fails. The losers are dropped (their sockets closed). When all fail,
/// every address's error is said.
async fn race(addrs: &[SocketAddr], delay: Duration) -> Result<TcpStream, String> {
    let mut waiting = addrs.iter().copied();
    let mut attempts = FuturesUnordered::new();
    let mut errors: Vec<String> = Vec::new();
    let mut next_start = pin!(tokio::time::sleep(Duration::ZERO));
    loop {
        tokio::select! {
            // The next attempt's turn: its delay is over, or nothing else is under way.
            () = &mut next_start, if waiting.len() > 0 => {
                if let Some(addr) = waiting.next() {
                    attempts.push(async move { (addr, TcpStream::connect(addr).await) });
                }
                next_start.as_mut().reset(tokio::time::Instant::now() + delay);
            }
            Some((addr, result)) = attempts.next(), if !attempts.is_empty() => match result {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Err(e) => {
                    errors.push(format!("{addr}: {e}"));
                    if waiting.len() > 0 {
                        // A failure hands over at once (RFC 8305 section 5).
                        next_start.as_mut().reset(tokio::time::Instant::now());
                    } else if attempts.is_empty() {
                        return Err(errors.join("; "));
                    }
                }
            },
            else => return Err(if errors.is_empty() { "no address".into() } else { errors.join("; ") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn ipv6_goes_first_and_the_families_alternate() {
        let got = interleave(vec![
            addr("10.0.0.1:1"),
            addr("10.0.0.2:1"),
            addr("10.0.0.3:1"),
            addr("[::1]:1"),
            addr("[::2]:1"),
        ]);
        assert_eq!(
            got,
            vec![
                addr("[::1]:1"),
                addr("10.0.0.1:1"),
                addr("[::2]:1"),
                addr("10.0.0.2:1"),
                addr("10.0.0.3:1"),
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_address_hands_over_at_once_and_the_next_one_wins() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let good = listener.local_addr().expect("addr");
        // A port nothing listens on: refused at once.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let started = std::time::Instant::now();
        let tcp = race(&[dead, good], Duration::from_secs(10))
            .await
            .expect("the second address connects");
        assert_eq!(tcp.peer_addr().expect("peer"), good);
        // Not the 10-s delay: a refusal starts the next attempt at once.
        assert!(started.elapsed() < Duration::from_secs(2));
        let e = race(&[dead], Duration::from_millis(10))
            .await
            .expect_err("nothing listens");
        assert!(e.contains(&dead.to_string()), "{e}");
    }

    #[tokio::test]
    async fn a_fixed_address_wins_over_the_resolver_and_a_missing_name_says_so() {
        let dialer = Dialer {
            resolve: vec![("chat.test".into(), vec!["127.0.0.1".parse().expect("ip")])],
            delay: ATTEMPT_DELAY,
        };
        assert_eq!(
            dialer.resolve("CHAT.test", 80).await.expect("fixed"),
            vec![addr("127.0.0.1:80")]
        );
        let e = dialer
            .resolve("no-such-host.invalid", 80)
            .await
            .expect_err("does not resolve");
        assert_eq!(e.error, TransportError::NameLookup);
        assert!(e.detail.contains("no-such-host.invalid"), "{}", e.detail);
    }
}
