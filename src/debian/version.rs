//! Debian version ordering (Debian Policy 5.6.12), as `dpkg --compare-versions`
//! applies it: epoch, then upstream version and revision compared part by
//! part, non-digits before digits, `~` sorting before everything, even the end.

use std::cmp::Ordering;

/// Compares two Debian versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

/// (epoch, upstream, revision); a missing epoch is 0, a missing revision "".
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// The weight of a byte in the non-digit part: `~` lowest (below the end of
/// the string, which is 0), then letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // the non-digit prefixes, byte by byte
        loop {
            let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
            let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            match weight(ca).cmp(&weight(cb)) {
                Ordering::Equal => {}
                o => return o,
            }
            a = &a[ca.is_some() as usize..];
            b = &b[cb.is_some() as usize..];
        }
        // the digit runs, as numbers (leading zeros do not count)
        let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let na = trim_zeros(&a[..da]);
        let nb = trim_zeros(&b[..db]);
        match na.len().cmp(&nb.len()).then_with(|| na.cmp(nb)) {
            Ordering::Equal => {}
            o => return o,
        }
        a = &a[da..];
        b = &b[db..];
    }
    Ordering::Equal
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let k = d.iter().take_while(|c| **c == b'0').count();
    &d[k..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_as_dpkg_does() {
        // each pair checked with `dpkg --compare-versions A lt B` on Debian 12
        let less = [
            ("1.0", "1.1"),
            ("1.0", "1.0-1"),
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.0-1", "1.0-2"),
            ("1.9", "1.10"),
            ("2.36-9+deb12u13", "2.36-9+deb12u14"),
            ("2.36-9+deb12u9", "2.36-9+deb12u10"),
            ("1:0.1", "2:0.0"),
            ("9.9", "1:0.1"),
            ("1.0a", "1.0b"),
            ("1.0", "1.0a"),
            ("1.0a", "1.0+"),
            ("12.4+deb12u14", "12.4+deb12u15"),
            ("5.2.15-2+b12", "5.2.15-2+b13"),
            ("0.5.12-2", "0.5.12-2+b1"),
        ];
        for (a, b) in less {
            assert_eq!(compare(a, b), Less, "{a} < {b}");
            assert_eq!(compare(b, a), Greater, "{b} > {a}");
        }
        assert_eq!(compare("1.01", "1.1"), Equal);
        assert_eq!(compare("0:1.0", "1.0"), Equal);
        assert_eq!(compare("1.0-1", "1.0-1"), Equal);
    }
}
