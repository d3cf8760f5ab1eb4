//! Limits counted per client: the client a request comes from ([`client_address`]) and a bounded
//! map of token buckets keyed by its group ([`RateLimiter`]), used by the gateways' vote rate limit,
//! the API's voter-token issuance and its count of wrong admin tokens.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{extract::ConnectInfo, http::Extensions};

use crate::client::{ClientAddress, client_group};

/// The client of a request: the address the listener resolved ([`ClientAddress`], which honours
/// `--trusted-proxies`), else the TCP peer; `None` for a request that came from no listener.
pub fn client_address(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ClientAddress>()
        .map(|client| client.0)
        .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|peer| peer.0.ip()))
}

/// Open connections (or streams) per client group ([`client_group`]: IPv6 by /64), capped.
#[derive(Clone)]
pub struct PerClient {
    cap: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerClient {
    /// At most `cap` at once per client group (0: no cap).
    pub fn new(cap: usize) -> Self {
        Self { cap, open: Arc::default() }
    }

    /// A slot for one more connection from `ip`, or `None` when its group holds the cap.
    pub fn enter(&self, ip: IpAddr) -> Option<ClientSlot> {
        let group = client_group(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(group).or_default();
        if self.cap > 0 && *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot { open: Arc::clone(&self.open), group })
    }
}

/// One connection counted for its client group until dropped.
pub struct ClientSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    group: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.group) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.group);
            }
        }
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Its bucket is empty; one more token arrives after this long.
    Empty(Duration),
    /// The map holds `max_clients` clients that were all active within one period.
    Crowded,
}

/// Token buckets per client group ([`client_group`]: IPv6 by /64): `burst` tokens at first, refilled
/// at `burst` per `period`. A bucket idle for a whole period is full again, so it is forgotten
/// without losing anything; the map never holds more than `max_clients` buckets.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    period: Duration,
    max_clients: usize,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<IpAddr, (f64, Instant)>,
    swept: Instant,
}

impl RateLimiter {
    /// `burst` (> 0) requests per `period` (> 0) per client, for at most `max_clients` clients at once.
    pub fn new(burst: u32, period: Duration, max_clients: usize) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            period: period.max(Duration::from_millis(1)),
            max_clients: max_clients.max(1),
            state: Mutex::new(Buckets { map: HashMap::new(), swept: Instant::now() }),
        }
    }

    /// Requests per period allowed in a burst.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// Takes a token from `client`'s bucket.
    pub fn check(&self, client: IpAddr) -> Result<(), Limited> {
        self.check_at(client, Instant::now())
    }

    fn check_at(&self, client: IpAddr, now: Instant) -> Result<(), Limited> {
        let key = client_group(client);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Buckets { map, swept } = &mut *state;
        let period = self.period;
        if !map.contains_key(&key) && (map.len() >= self.max_clients || now.saturating_duration_since(*swept) >= period)
        {
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < period);
            *swept = now;
            if map.len() >= self.max_clients {
                return Err(Limited::Crowded);
            }
        }
        let per_second = self.burst / period.as_secs_f64();
        let (tokens, at) = map.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Limited::Empty(Duration::from_secs_f64((1.0 - *tokens) / per_second)))
        }
    }

    /// How long `client` must wait before its next request would be admitted, without taking a
    /// token; `None` when it would be admitted now (or is not tracked).
    pub fn waiting(&self, client: IpAddr) -> Option<Duration> {
        self.waiting_at(client, Instant::now())
    }

    fn waiting_at(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = state.map.get(&client_group(client))?;
        let per_second = self.burst / self.period.as_secs_f64();
        let tokens = (tokens + now.saturating_duration_since(*at).as_secs_f64() * per_second).min(self.burst);
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / per_second))
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_refill() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60), 10);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at(ip("192.0.2.1"), start), Ok(()));
        }
        let Err(Limited::Empty(wait)) = limiter.check_at(ip("192.0.2.1"), start) else { panic!("limited") };
        assert!((19..=20).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(limiter.check_at(ip("192.0.2.2"), start), Ok(()), "another client");
        assert_eq!(limiter.check_at(ip("192.0.2.1"), start + Duration::from_secs(20)), Ok(()), "refilled");
    }

    #[test]
    fn waiting_tells_an_empty_bucket_without_taking_a_token() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60), 10);
        let start = Instant::now();
        assert_eq!(limiter.waiting_at(ip("192.0.2.1"), start), None, "unknown client");
        assert_eq!(limiter.check_at(ip("192.0.2.1"), start), Ok(()));
        assert_eq!(limiter.waiting_at(ip("192.0.2.1"), start), None, "one token left");
        assert_eq!(limiter.waiting_at(ip("192.0.2.1"), start), None, "peeking took nothing");
        assert_eq!(limiter.check_at(ip("192.0.2.1"), start), Ok(()));
        let wait = limiter.waiting_at(ip("192.0.2.1"), start).expect("empty");
        assert!((29..=30).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(limiter.waiting_at(ip("192.0.2.1"), start + Duration::from_secs(30)), None, "refilled");
    }

    #[test]
    fn one_ipv6_64_is_one_client() {
        let limiter = RateLimiter::new(1, Duration::from_secs(1), 10);
        let now = Instant::now();
        assert_eq!(limiter.check_at(ip("2001:db8:0:1::1"), now), Ok(()));
        assert!(limiter.check_at(ip("2001:db8:0:1:ffff::2"), now).is_err());
        assert_eq!(limiter.check_at(ip("2001:db8:0:2::1"), now), Ok(()));
    }

    #[test]
    fn idle_clients_are_forgotten_and_the_map_stays_bounded() {
        let limiter = RateLimiter::new(1, Duration::from_secs(1), 100);
        let now = Instant::now();
        for i in 0..100u32 {
            assert_eq!(limiter.check_at(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), now), Ok(()));
        }
        assert_eq!(limiter.check_at(ip("192.0.2.1"), now), Err(Limited::Crowded), "all 100 are active");
        assert_eq!(limiter.clients(), 100);
        // A period later the idle buckets are full again: forgetting them loses nothing.
        let later = now + Duration::from_secs(1);
        assert_eq!(limiter.check_at(ip("192.0.2.1"), later), Ok(()));
        assert_eq!(limiter.clients(), 1);
    }
}
