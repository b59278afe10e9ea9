//! Who may change the cache (admin clear and purge, `PURGE` on the proxy port), and who may
//! read the status page's data.
//!
//! With a token configured, a request needs `Authorization: Bearer <token>`. Without one,
//! only clients on loopback connecting to a loopback listener are trusted with changes: a
//! deployment that exposes these endpoints beyond the machine must set a token. Reading
//! `/status` needs the token when one is set, and nothing otherwise, like the other
//! read-only admin endpoints.

use std::net::IpAddr;

use http::HeaderValue;

use crate::error::ErrorKind;

#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    token: Option<String>,
}

impl AdminAuth {
    pub fn new(token: Option<String>) -> Self {
        AdminAuth { token }
    }

    /// Checks a request's credentials. `listener_loopback` is whether the listener it came
    /// in on is bound to a loopback address.
    pub fn check(
        &self,
        authorization: Option<&HeaderValue>,
        client: Option<IpAddr>,
        listener_loopback: bool,
    ) -> Result<(), ErrorKind> {
        match &self.token {
            Some(token) => {
                let presented = authorization
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                match presented {
                    Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(()),
                    _ => Err(ErrorKind::Unauthorized),
                }
            }
            None if listener_loopback && client.is_some_and(is_loopback) => Ok(()),
            None => Err(ErrorKind::Forbidden),
        }
    }

    /// Checks a read of the status data: the token when one is configured, else nothing.
    pub fn check_read(&self, authorization: Option<&HeaderValue>) -> Result<(), ErrorKind> {
        match &self.token {
            Some(_) => self.check(authorization, None, false),
            None => Ok(()),
        }
    }
}

pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Compares tokens in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));

    #[test]
    fn token_required_when_configured() {
        let auth = AdminAuth::new(Some("s3cret".into()));
        let ok = HeaderValue::from_static("Bearer s3cret");
        let bad = HeaderValue::from_static("Bearer s3creT");
        assert_eq!(auth.check(Some(&ok), REMOTE, false), Ok(()));
        assert_eq!(
            auth.check(Some(&bad), LOCAL, true),
            Err(ErrorKind::Unauthorized)
        );
        assert_eq!(auth.check(None, LOCAL, true), Err(ErrorKind::Unauthorized));
    }

    #[test]
    fn reads_need_the_token_only_when_one_is_set() {
        let ok = HeaderValue::from_static("Bearer s3cret");
        let bad = HeaderValue::from_static("Bearer nope");
        let auth = AdminAuth::new(Some("s3cret".into()));
        assert_eq!(auth.check_read(Some(&ok)), Ok(()));
        assert_eq!(auth.check_read(Some(&bad)), Err(ErrorKind::Unauthorized));
        assert_eq!(auth.check_read(None), Err(ErrorKind::Unauthorized));
        assert_eq!(AdminAuth::new(None).check_read(None), Ok(()));
    }

    #[test]
    fn without_token_only_loopback() {
        let auth = AdminAuth::new(None);
        assert_eq!(auth.check(None, LOCAL, true), Ok(()));
        assert_eq!(auth.check(None, LOCAL, false), Err(ErrorKind::Forbidden));
        assert_eq!(auth.check(None, REMOTE, true), Err(ErrorKind::Forbidden));
        assert_eq!(auth.check(None, None, true), Err(ErrorKind::Forbidden));
    }

    #[test]
    fn helpers() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
    }
}
