//! Content coding of `/metrics`: gzip when the scraper accepts it (Prometheus always sends
//! `Accept-Encoding: gzip`), identity otherwise.
//!
//! Why: at 10,000 namespaces the exposition is tens of megabytes of highly repetitive text that gzip shrinks
//! about tenfold, and moving it is part of every scrape. Level 1 (the fastest): the scraper waits for the
//! compression, and higher levels cost several times the CPU for a few percent less.

use std::io::{self, Write as _};

use flate2::{Compression, write::GzEncoder};

/// Whether an `Accept-Encoding` header value (RFC 9110 §12.5.3) accepts gzip: `gzip` or `x-gzip` with a
/// non-zero q-value, or `*` with one when gzip is not named. No header, or a value that does not name it,
/// means identity.
pub fn accepts_gzip(accept_encoding: Option<&[u8]>) -> bool {
    let Some(value) = accept_encoding.and_then(|v| std::str::from_utf8(v).ok()) else { return false };
    let (mut named, mut wildcard) = (None, None);
    for item in value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let mut weight = 1.0_f32;
        for param in parts {
            if let Some((name, q)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("q")
            {
                weight = q.trim().parse().unwrap_or(0.0);
            }
        }
        match coding.as_str() {
            "gzip" | "x-gzip" => named = Some(named.map_or(weight, |w: f32| w.max(weight))),
            "*" => wildcard = Some(weight),
            _ => {}
        }
    }
    named.or(wildcard).is_some_and(|weight| weight > 0.0)
}

/// `body` gzipped at level 1.
pub fn gzip(body: &[u8]) -> io::Result<Vec<u8>> {
    // Text this repetitive compresses about tenfold: start with room for that.
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 8 + 64), Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn gzip_is_accepted_as_http_says() {
        let accepts = |value: &str| accepts_gzip(Some(value.as_bytes()));
        assert!(!accepts_gzip(None));
        // What Prometheus sends.
        assert!(accepts("gzip"));
        assert!(accepts("deflate, GZIP;q=0.5"));
        assert!(accepts("x-gzip"));
        assert!(accepts("br;q=1, *;q=0.1"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip; q=0.000, *"), "a named zero wins over the wildcard");
        assert!(!accepts("identity"));
        assert!(!accepts("br, deflate"));
        assert!(!accepts("*;q=0"));
        assert!(!accepts(""));
        assert!(!accepts("gzip;q=nonsense"), "an unreadable weight is no acceptance");
    }

    #[test]
    fn gzip_round_trips() {
        let body = "netns_monitor_netns_info{name=\"a\",netns=\"1\"} 1\n".repeat(1000);
        let packed = gzip(body.as_bytes()).unwrap();
        assert!(packed.len() * 10 < body.len(), "{} of {} bytes", packed.len(), body.len());
        let mut unpacked = String::new();
        flate2::read::GzDecoder::new(&packed[..]).read_to_string(&mut unpacked).unwrap();
        assert_eq!(unpacked, body);
    }
}
