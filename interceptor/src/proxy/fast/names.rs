//! Header names as the fast path reads them: compared and put in lower case a word at a time
//! (as `HeaderName`s compare, and as hyper writes them), and those it looks for by what they
//! are (`Known`), each name read classed once.

/// The names the fast path looks for by what they are: each name read is classed once, so
/// that a look for one of them is a look at its place, not a search. The first ones are
/// `HOP_BY_HOP`'s, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    Connection,
    KeepAlive,
    ProxyAuthenticate,
    ProxyAuthorization,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    ContentLength,
    ContentType,
    Host,
    Date,
    Expect,
}

/// The names of `Known`, in its order, in lower case.
pub const KNOWN_NAMES: [&[u8]; 13] = [
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",
    b"content-type",
    b"host",
    b"date",
    b"expect",
];

impl Known {
    /// Those of `HOP_BY_HOP`, in its order.
    pub const HOP_BY_HOP: [Known; 8] = [
        Known::Connection,
        Known::KeepAlive,
        Known::ProxyAuthenticate,
        Known::ProxyAuthorization,
        Known::Te,
        Known::Trailer,
        Known::TransferEncoding,
        Known::Upgrade,
    ];

    /// What `name` is, if one of these: told by its length and first letter, then one
    /// comparison.
    // Inlined: most names are of another length or begin with another letter, told apart at
    // once.
    #[inline(always)]
    pub fn of(name: &[u8]) -> Option<Known> {
        // Bit `n` set: some of these names are `n` letters long.
        const LENGTHS: u32 =
            1 << 2 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 10 | 1 << 12 | 1 << 14 | 7 << 17;
        if name.len() >= 32 || LENGTHS >> name.len() & 1 == 0 {
            return None;
        }
        // A letter in lower case (any other byte is told apart by the comparison).
        let first = name.first()? | 0x20;
        let candidate = match (name.len(), first) {
            (2, b't') => Known::Te,
            (4, b'h') => Known::Host,
            (4, b'd') => Known::Date,
            (6, b'e') => Known::Expect,
            (7, b't') => Known::Trailer,
            (7, b'u') => Known::Upgrade,
            (10, b'c') => Known::Connection,
            (10, b'k') => Known::KeepAlive,
            (12, b'c') => Known::ContentType,
            (14, b'c') => Known::ContentLength,
            (17, b't') => Known::TransferEncoding,
            (18, b'p') => Known::ProxyAuthenticate,
            (19, b'p') => Known::ProxyAuthorization,
            _ => return None,
        };
        candidate.is(name).then_some(candidate)
    }

    /// Whether `name`, of this one's length, is this one: its words, put in lower case,
    /// compared with this one's (`KNOWN_WORDS`).
    #[inline(never)]
    fn is(self, name: &[u8]) -> bool {
        let [first, middle, last] = KNOWN_WORDS[self as usize];
        let len = name.len();
        if len < 4 {
            return alike(KNOWN_NAMES[self as usize], name, true);
        }
        if len < 8 {
            return lower_case(four(name, 0)) == first && lower_case(four(name, len - 4)) == last;
        }
        lower_case(eight(name, 0)) == first
            && (len <= 16 || lower_case(eight(name, 8)) == middle)
            && lower_case(eight(name, len - 8)) == last
    }
}

/// Each of `KNOWN_NAMES` as `Known::is` reads a name: its first eight bytes, its next eight
/// (when it is longer than sixteen) and its last eight (which may overlap the others), as
/// little-endian words; its first four and its last four in a name shorter than eight; none
/// in one shorter than four. No known name is longer than 24.
const KNOWN_WORDS: [[u64; 3]; KNOWN_NAMES.len()] = {
    const fn word(name: &[u8], at: usize, len: usize) -> u64 {
        let mut word = 0;
        let mut i = 0;
        while i < len {
            word |= (name[at + i] as u64) << (8 * i);
            i += 1;
        }
        word
    }
    let mut words = [[0; 3]; KNOWN_NAMES.len()];
    let mut i = 0;
    while i < KNOWN_NAMES.len() {
        let name = KNOWN_NAMES[i];
        let len = name.len();
        assert!(len <= 24, "a known name longer than three words");
        words[i] = match len {
            0..4 => [0; 3],
            4..8 => [word(name, 0, 4), 0, word(name, len - 4, 4)],
            8..=16 => [word(name, 0, 8), 0, word(name, len - 8, 8)],
            _ => [word(name, 0, 8), word(name, 8, 8), word(name, len - 8, 8)],
        };
        i += 1;
    }
    words
};

/// Whether two names are one, as `HeaderName`s (in any case).
// Inlined: most names compared are of other lengths, or the same slice (a name's next field).
#[inline(always)]
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a.as_ptr() == b.as_ptr() || same_letters(a, b))
}

/// Whether two names of one length are one, in any case.
fn same_letters(a: &[u8], b: &[u8]) -> bool {
    alike(a, b, false)
}

/// Whether two names of one length are one, in any case, eight letters at a time (four at a
/// time in shorter names); `a_lower`: `a` is in lower case already (only `b` is put in it).
// Inlined: `a_lower` is known where it is called, and most names compared are short.
#[inline(always)]
fn alike(a: &[u8], b: &[u8], a_lower: bool) -> bool {
    let len = a.len();
    let lower_a = |word: u64| if a_lower { word } else { lower_case(word) };
    if len < 4 {
        return a.eq_ignore_ascii_case(b);
    }
    if len < 8 {
        // The last four overlap the first when the length is not four.
        return lower_a(four(a, 0)) == lower_case(four(b, 0))
            && lower_a(four(a, len - 4)) == lower_case(four(b, len - 4));
    }
    let same = |at: usize| lower_a(eight(a, at)) == lower_case(eight(b, at));
    // The last eight overlap the others when the length is not a multiple of eight.
    let mut at = 0;
    while at + 8 < len {
        if !same(at) {
            return false;
        }
        at += 8;
    }
    same(len - 8)
}

/// The four bytes of `bytes` from `at`, as a little-endian word.
#[inline(always)]
fn four(bytes: &[u8], at: usize) -> u64 {
    let four: [u8; 4] = bytes[at..at + 4].try_into().unwrap_or_default();
    u64::from(u32::from_le_bytes(four))
}

/// The eight bytes of `bytes` from `at`, as a little-endian word.
#[inline(always)]
fn eight(bytes: &[u8], at: usize) -> u64 {
    let eight: [u8; 8] = bytes[at..at + 8].try_into().unwrap_or_default();
    u64::from_le_bytes(eight)
}

/// `name`'s ASCII capitals put in lower case (as `make_ascii_lowercase`), eight at a time
/// (four at a time in a shorter name); the last eight (or four) overlap the others when the
/// length is not a multiple of them, as putting in lower case twice changes nothing.
// Inlined: called once for each field written, on a short name.
#[inline]
pub fn make_lower_case(name: &mut [u8]) {
    let len = name.len();
    if len >= 8 {
        let mut at = 0;
        while at + 8 < len {
            lower_case_eight(name, at);
            at += 8;
        }
        lower_case_eight(name, len - 8);
    } else if len >= 4 {
        lower_case_four(name, 0);
        lower_case_four(name, len - 4);
    } else {
        name.make_ascii_lowercase();
    }
}

fn lower_case_eight(name: &mut [u8], at: usize) {
    let word = &mut name[at..at + 8];
    let eight: [u8; 8] = (*word).try_into().unwrap_or_default();
    word.copy_from_slice(&lower_case(u64::from_le_bytes(eight)).to_le_bytes());
}

fn lower_case_four(name: &mut [u8], at: usize) {
    let word = &mut name[at..at + 4];
    let four: [u8; 4] = (*word).try_into().unwrap_or_default();
    // The four bytes above are 0, which `lower_case` leaves as they are.
    let lower = lower_case(u64::from(u32::from_le_bytes(four))) as u32;
    word.copy_from_slice(&lower.to_le_bytes());
}

/// Eight bytes with their ASCII capitals in lower case (as `u8::to_ascii_lowercase`).
fn lower_case(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let below_128 = word & (0x7f * ONES);
    // A byte's high bit once it is past `@`, and once it is past `Z` (no carries: each sum
    // stays under 256).
    let past_at = below_128 + (0x80 - u64::from(b'A')) * ONES;
    let past_z = below_128 + (0x80 - u64::from(b'Z') - 1) * ONES;
    let capitals = past_at & !past_z & !word & (0x80 * ONES);
    word | capitals >> 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HOP_BY_HOP;

    #[test]
    fn names_are_alike_in_any_case_and_only_then() {
        let names: [&[u8]; 6] = [
            b"te",
            b"x-cheops-site",
            b"content-length",
            b"@[`{",
            b"ab",
            b"",
        ];
        for (i, a) in names.iter().enumerate() {
            for (j, b) in names.iter().enumerate() {
                let upper = b.to_ascii_uppercase();
                assert_eq!(same_name(a, b), i == j);
                assert_eq!(
                    same_name(a, &upper),
                    a.eq_ignore_ascii_case(&upper),
                    "{a:?}"
                );
            }
        }
        let mut mixed: Vec<u8> = (0..=255).chain(b"X-Cheops-Site".iter().copied()).collect();
        let expected = mixed.to_ascii_lowercase();
        make_lower_case(&mut mixed);
        assert_eq!(mixed, expected);
        // Every length, the last word overlapping the others or not.
        for len in 0..=20 {
            let mut name: Vec<u8> = (b'>'..).take(len).collect();
            let expected = name.to_ascii_lowercase();
            make_lower_case(&mut name);
            assert_eq!(name, expected);
            let upper = name.to_ascii_uppercase();
            assert!(same_name(&name, &upper));
            let mut other = upper.clone();
            if let Some(first) = other.first_mut() {
                *first ^= 1;
                assert!(!same_name(&name, &other), "{other:?}");
            }
        }
        // Every byte against every other in one word: as `eq_ignore_ascii_case`.
        for x in 0..=255u8 {
            for y in 0..=255u8 {
                let (a, b) = (
                    [b'a', b'b', b'c', b'd', x, b'e', b'f', b'g', b'h'],
                    [b'A', b'b', b'C', b'd', y, b'E', b'f', b'g', b'H'],
                );
                assert_eq!(same_name(&a, &b), a.eq_ignore_ascii_case(&b), "{x} {y}");
            }
        }
    }

    #[test]
    fn known_names_are_told_in_any_case_and_only_they() {
        for (i, name) in KNOWN_NAMES.iter().enumerate() {
            let known = Known::of(name).unwrap();
            assert_eq!(known as usize, i);
            assert_eq!(Known::of(&name.to_ascii_uppercase()), Some(known));
            // A byte unlike in any place (every word read) makes another name.
            for at in 0..name.len() {
                let mut other = name.to_vec();
                other[at] ^= 1;
                assert_eq!(Known::of(&other), None, "{other:?}");
            }
        }
        for (at, known) in Known::HOP_BY_HOP.into_iter().enumerate() {
            assert_eq!(known as usize, at);
        }
        for (hop_by_hop, name) in HOP_BY_HOP.iter().zip(KNOWN_NAMES) {
            assert_eq!(hop_by_hop.as_str().as_bytes(), name);
        }
        for other in [&b"server"[..], b"etag", b"x-cheops-site", b"", b"\xff"] {
            assert_eq!(Known::of(other), None);
        }
    }
}
