//! One pass over a parsed head's fields, sans-IO: what framing (RFC 9112 §6) and connection
//! management (RFC 9112 §9.6, RFC 9110 §7.6.1) need, found by matching each name once (by
//! length first) instead of searching all fields per question; and the hop-by-hop rule the
//! head writers apply per field.

use std::ops::Range;

use super::head::{Head, HeadError};

/// What the fields of one head say about framing and the connection.
#[derive(Debug)]
pub struct Scan {
    /// Whether the last transfer coding is `chunked`; `None` without Transfer-Encoding.
    pub chunked: Option<bool>,
    /// The `Content-Length` (all values must agree), `None` without one.
    pub length: Result<Option<u64>, HeadError>,
    /// `Connection` tokens.
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade_token: bool,
    /// `Connection` names a field beyond the fixed hop-by-hop list (rare: only then are
    /// the written fields checked against its tokens).
    pub names_fields: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The first `Upgrade` field's value.
    pub upgrade: Option<Range<usize>>,
}

/// Whether `input` equals `lower` ignoring ASCII case, where `lower` is already lowercase
/// (every name and token matched here is a constant). Runs for every field of every head, so
/// lengths of 8 to 16 bytes (most names that matter) are compared as two 8-byte words, which
/// overlap when shorter than 16.
#[inline]
pub fn lower_eq(input: &[u8], lower: &[u8]) -> bool {
    debug_assert!(!lower.iter().any(u8::is_ascii_uppercase));
    let n = input.len();
    if n != lower.len() {
        return false;
    }
    if !(8..=16).contains(&n) {
        return input
            .iter()
            .zip(lower)
            .all(|(&a, &b)| a.to_ascii_lowercase() == b);
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    lower_word(word(input, 0)) == word(lower, 0)
        && lower_word(word(input, n - 8)) == word(lower, n - 8)
}

/// ASCII-lowercases the 8 bytes of `x` at once (bytes outside `A`-`Z` stay as they are).
#[inline]
fn lower_word(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let seven = x & !HIGH;
    // Per byte, bit 7 of `from_a` is set when the low seven bits are >= 'A', of `past_z`
    // when they are > 'Z' (no carry crosses a byte: each sum stays below 0x100).
    let from_a = seven + ONES * (0x80 - u64::from(b'A'));
    let past_z = seven + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = (from_a & !past_z) & !x & HIGH;
    x | (upper >> 2)
}

/// The comma-separated tokens of one field value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A decimal `Content-Length` value (digits only, no sign, no overflow).
fn decimal(t: &[u8]) -> Option<u64> {
    if t.is_empty() {
        return None;
    }
    t.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))?
    })
}

/// Scans `h`'s fields once.
pub fn scan(h: &Head<'_>) -> Scan {
    let mut s = Scan {
        chunked: None,
        length: Ok(None),
        close: false,
        keep_alive: false,
        upgrade_token: false,
        names_fields: false,
        expect_continue: false,
        upgrade: None,
    };
    for f in h.fields {
        let name = h.span(&f.name);
        let value = h.span(&f.value);
        let is = |n: &[u8]| lower_eq(name, n);
        match name.len() {
            10 if is(b"connection") => {
                for t in tokens(value) {
                    match t.len() {
                        // A field named `Close` goes too (RFC 9110 §7.6.1), hence names_fields.
                        5 if lower_eq(t, b"close") => (s.close, s.names_fields) = (true, true),
                        10 if lower_eq(t, b"keep-alive") => s.keep_alive = true,
                        7 if lower_eq(t, b"upgrade") => s.upgrade_token = true,
                        _ => s.names_fields |= !fixed_hop_by_hop(t),
                    }
                }
            }
            17 if is(b"transfer-encoding") => {
                if let Some(last) = tokens(value).last() {
                    s.chunked = Some(lower_eq(last, b"chunked"));
                }
            }
            14 if is(b"content-length") => {
                for t in tokens(value) {
                    s.length = match (s.length, decimal(t)) {
                        (Err(e), _) => Err(e),
                        (_, None) => Err(HeadError::Malformed("invalid Content-Length")),
                        (Ok(Some(m)), Some(n)) if m != n => {
                            Err(HeadError::Malformed("conflicting Content-Length values"))
                        }
                        (Ok(_), Some(n)) => Ok(Some(n)),
                    };
                }
            }
            6 if is(b"expect") => {
                s.expect_continue = lower_eq(value.trim_ascii(), b"100-continue");
            }
            7 if s.upgrade.is_none() && is(b"upgrade") => s.upgrade = Some(f.value.clone()),
            _ => {}
        }
    }
    s
}

impl Scan {
    /// Whether the connection stays open after this message: HTTP/1.1 unless `close`,
    /// HTTP/1.0 only with `keep-alive`.
    pub fn persistent(&self, minor: u8) -> bool {
        if minor == 1 {
            !self.close
        } else {
            self.keep_alive
        }
    }
}

/// Hop-by-hop fields (RFC 9110 §7.6.1), never passed on: `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, `Proxy-Authorization`. `Transfer-Encoding`
/// is kept: a chunked body passes through still chunked. Matched by length first, so most
/// names cost one length check.
#[inline]
pub fn fixed_hop_by_hop(name: &[u8]) -> bool {
    let candidates: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"trailer", b"upgrade"],
        10 => &[b"connection", b"keep-alive"],
        16 => &[b"proxy-connection"],
        19 => &[b"proxy-authorization"],
        _ => return false,
    };
    candidates.iter().any(|c| lower_eq(name, c))
}

/// The hop-by-hop fields of one head: the fixed ones plus any its `Connection` fields name.
pub struct HopByHop<'a> {
    h: &'a Head<'a>,
    names_fields: bool,
}

impl<'a> HopByHop<'a> {
    /// `names_fields`: from the head's [`Scan`].
    pub fn new(h: &'a Head<'a>, names_fields: bool) -> Self {
        HopByHop { h, names_fields }
    }

    #[inline]
    pub fn is(&self, name: &[u8]) -> bool {
        fixed_hop_by_hop(name)
            || (self.names_fields
                && self
                    .h
                    .all("connection")
                    .flat_map(tokens)
                    .any(|t| t.eq_ignore_ascii_case(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time compare agrees with the standard one on any bytes.
        #[test]
        fn lower_eq_agrees_with_eq_ignore_ascii_case(
            lower in "[a-z0-9-]{0,20}",
            flips in proptest::collection::vec(any::<bool>(), 20),
            noise in proptest::collection::vec(any::<u8>(), 0..20),
            at in 0usize..20,
        ) {
            let lower = lower.as_bytes();
            let mut input: Vec<u8> = lower
                .iter()
                .zip(&flips)
                .map(|(&b, &f)| if f { b.to_ascii_uppercase() } else { b })
                .collect();
            prop_assert!(lower_eq(&input, lower));
            if let Some(b) = input.get_mut(at) {
                *b = noise.first().copied().unwrap_or(b'x');
            }
            prop_assert_eq!(lower_eq(&input, lower), input.eq_ignore_ascii_case(lower));
            prop_assert_eq!(lower_eq(&noise, lower), noise.eq_ignore_ascii_case(lower));
        }

        #[test]
        fn lower_word_lowercases_exactly_the_ascii_capitals(x in any::<u64>()) {
            let want = u64::from_le_bytes(x.to_le_bytes().map(|b| b.to_ascii_lowercase()));
            prop_assert_eq!(lower_word(x), want);
        }
    }

    #[test]
    fn the_fixed_hop_by_hop_list_is_matched_in_any_case_and_nothing_else() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
        ] {
            assert!(fixed_hop_by_hop(name.as_bytes()), "{name}");
            assert!(fixed_hop_by_hop(name.to_uppercase().as_bytes()), "{name}");
        }
        for name in [
            "transfer-encoding",
            "content-length",
            "host",
            "tk",
            "upgradf",
            "",
        ] {
            assert!(!fixed_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn content_length_values_are_plain_decimals() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+1",
            b"-1",
            b"1 2",
            b"0x10",
            b"1e3",
        ] {
            assert_eq!(decimal(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
