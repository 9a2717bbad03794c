//! A head's header fields where they lie in the buffer they were read into, in the order a
//! `HeaderMap` made of them gives them: each name once, where it first came, its values after
//! it; a removal moves the last name into the removed one's place (`HeaderMap::remove`), and
//! an insertion replaces a name where it is or adds it last. The fast path writes what hyper
//! would write of a map, without building one.
use hyper::header::HeaderName;

use super::names::{same_name, Known, KNOWN_NAMES};
use crate::http::{HeaderTable, HOP_BY_HOP};

/// As many header fields as hyper's HTTP/1 parser takes (fewer than `ADDED`).
pub const MAX_HEADERS: usize = 100;
/// At most as many fields as are added to a head: `te`, `x-cheops-site`, `connection`.
const MAX_ADDED: usize = 3;
/// An entry of `order` from this up names an added field.
const ADDED: u8 = 128;

pub struct Fields<'a> {
    fields: &'a [httparse::Header<'a>],
    /// The names, in a map's order: the index in `fields` of a name's first field, or `ADDED`
    /// plus an index in `added`.
    order: [u8; MAX_HEADERS + MAX_ADDED],
    names: usize,
    added: [(&'a [u8], &'a [u8]); MAX_ADDED],
    added_len: usize,
    /// Whether a name comes in more than one field (then its other fields are looked for).
    repeated: bool,
    /// The `signature` of each name in `order`.
    signatures: [u16; MAX_HEADERS + MAX_ADDED],
    /// A bit for the `signature` of every name present (and of some removed): most names
    /// looked for are told absent without comparing names.
    seen: u64,
    /// For each of `Known`, one more than its place in `order`; 0: absent.
    known: [u8; KNOWN_NAMES.len()],
}

/// A name's length (its low byte) and last letter: two names unlike in them are not one name.
fn signature(name: &[u8]) -> u16 {
    let last = name.last().map_or(0, u8::to_ascii_lowercase);
    (name.len() as u16) << 8 | u16::from(last)
}

fn seen_bit(signature: u16) -> u64 {
    1 << ((signature ^ signature >> 8) % 64)
}

impl<'a> Fields<'a> {
    /// `fields`: at most `MAX_HEADERS`, as httparse reads them; none is found before `index`.
    // Made apart from `index`, and inlined: the table is then made where the caller keeps it,
    // not made in a local and copied there (a few hundred bytes).
    #[inline(always)]
    pub fn new(fields: &'a [httparse::Header<'a>]) -> Fields<'a> {
        Fields {
            fields,
            order: [0; MAX_HEADERS + MAX_ADDED],
            names: 0,
            added: [(&[], &[]); MAX_ADDED],
            added_len: 0,
            repeated: false,
            signatures: [0; MAX_HEADERS + MAX_ADDED],
            seen: 0,
            known: [0; KNOWN_NAMES.len()],
        }
    }

    /// Reads the names of the fields, so that they can be found.
    pub fn index(&mut self) {
        for (i, field) in self.fields.iter().enumerate() {
            let name = field.name.as_bytes();
            let known = Known::of(name);
            let signature = signature(name);
            let again = match known {
                Some(known) => self.known[known as usize] != 0,
                None => self.signature_position(name, signature).is_some(),
            };
            if again {
                self.repeated = true;
                continue;
            }
            self.push(i as u8, signature, known);
        }
    }

    fn name_of(&self, entry: u8) -> &'a [u8] {
        match entry.checked_sub(ADDED) {
            Some(added) => self.added[added as usize].0,
            None => self.fields[entry as usize].name.as_bytes(),
        }
    }

    /// Where `name` is in `order`.
    #[inline(always)]
    fn position(&self, name: &[u8]) -> Option<usize> {
        self.signature_position(name, signature(name))
    }

    /// Where `name`, of `signature`, is in `order`, searched for (`find`) only when `seen`
    /// does not tell it absent.
    // Inlined: most names looked for are absent, told so by `seen` alone.
    #[inline(always)]
    fn signature_position(&self, name: &[u8], signature: u16) -> Option<usize> {
        if self.seen & seen_bit(signature) == 0 {
            return None;
        }
        self.find(name, signature)
    }

    /// Where `known` is in `order`.
    fn known_position(&self, known: Known) -> Option<usize> {
        (self.known[known as usize] as usize).checked_sub(1)
    }

    /// Which of `Known` `name` is, if any, and where it is in `order` (told by its place when
    /// it is one of `Known`).
    fn place(&self, name: &[u8]) -> (Option<Known>, Option<usize>) {
        let known = Known::of(name);
        let at = match known {
            Some(known) => self.known_position(known),
            None => self.position(name),
        };
        (known, at)
    }

    /// Where `name`, of `signature`, is in `order`.
    #[inline(never)]
    fn find(&self, name: &[u8], signature: u16) -> Option<usize> {
        let signatures = &self.signatures[..self.names];
        let mut from = 0;
        while let Some(found) = signatures[from..].iter().position(|s| *s == signature) {
            let at = from + found;
            if same_name(self.name_of(self.order[at]), name) {
                return Some(at);
            }
            from = at + 1;
        }
        None
    }

    /// Adds a name, of `signature`, `known` if one of them, last.
    fn push(&mut self, entry: u8, signature: u16, known: Option<Known>) {
        if let Some(known) = known {
            self.known[known as usize] = self.names as u8 + 1;
        }
        self.order[self.names] = entry;
        self.signatures[self.names] = signature;
        self.names += 1;
        self.seen |= seen_bit(signature);
    }

    /// The values of the name at `entry`, in order.
    fn entry_values(&self, entry: u8) -> Values<'a> {
        let (first, rest) = match entry.checked_sub(ADDED) {
            Some(added) => (self.added[added as usize].1, &[][..]),
            None => {
                let at = entry as usize;
                let rest = if self.repeated {
                    &self.fields[at + 1..]
                } else {
                    &[][..]
                };
                (self.fields[at].value, rest)
            }
        };
        Values {
            first: Some(first),
            rest,
            name: self.name_of(entry),
        }
    }

    /// The values of `known`, in order.
    pub fn known_values(&self, known: Known) -> Values<'a> {
        self.values_at(self.known_position(known))
    }

    /// The values of the name at `at` in `order`, if any.
    fn values_at(&self, at: Option<usize>) -> Values<'a> {
        match at {
            Some(at) => self.entry_values(self.order[at]),
            None => Values {
                first: None,
                rest: &[],
                name: &[],
            },
        }
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.position(name).is_some()
    }

    pub fn has(&self, known: Known) -> bool {
        self.known[known as usize] != 0
    }

    /// Removes every field of `name`.
    pub fn remove_name(&mut self, name: &[u8]) {
        let (known, at) = self.place(name);
        self.remove_at(known, at);
    }

    /// Removes every field of the name at `at` in `order`, if any, `known` if one of them.
    fn remove_at(&mut self, known: Option<Known>, at: Option<usize>) {
        let Some(at) = at else {
            return;
        };
        if let Some(known) = known {
            self.known[known as usize] = 0;
        }
        self.names -= 1;
        if at == self.names {
            return;
        }
        self.order[at] = self.order[self.names];
        self.signatures[at] = self.signatures[self.names];
        if let Some(moved) = Known::of(self.name_of(self.order[at])) {
            self.known[moved as usize] = at as u8 + 1;
        }
    }

    /// Sets `name` (in lower case) to `value` alone: where the name is, or last.
    pub fn set(&mut self, name: &'a [u8], value: &'a [u8]) {
        assert!(
            self.added_len < MAX_ADDED,
            "more fields added than a head gets"
        );
        let entry = ADDED + self.added_len as u8;
        self.added[self.added_len] = (name, value);
        self.added_len += 1;
        match self.place(name) {
            (_, Some(at)) => self.order[at] = entry,
            (known, None) => self.push(entry, signature(name), known),
        }
    }

    /// Every field, in a map's order: `(name, value)`.
    pub fn iter(&self) -> Iter<'_, 'a> {
        Iter {
            table: self,
            next: 0,
            more_of: None,
        }
    }
}

/// The values of one name, in order.
pub struct Values<'a> {
    first: Option<&'a [u8]>,
    /// The fields after the first, among which the name's others are (none when no name
    /// comes in more than one field).
    rest: &'a [httparse::Header<'a>],
    name: &'a [u8],
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let name = self.name;
        let at = self
            .rest
            .iter()
            .position(|field| same_name(field.name.as_bytes(), name))?;
        let value = self.rest[at].value;
        self.rest = &self.rest[at + 1..];
        Some(value)
    }
}

/// The fields of a head in a map's order.
pub struct Iter<'t, 'a> {
    table: &'t Fields<'a>,
    /// The next name in `order`.
    next: usize,
    /// A name whose fields are looked for from this index on.
    more_of: Option<(&'a [u8], usize)>,
}

impl<'a> Iterator for Iter<'_, 'a> {
    type Item = (&'a [u8], &'a [u8]);

    // Inlined: called for every field written, it does little.
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let table = self.table;
        if let Some((name, from)) = self.more_of.take() {
            let more = table.fields[from..]
                .iter()
                .position(|field| same_name(field.name.as_bytes(), name));
            if let Some(at) = more {
                self.more_of = Some((name, from + at + 1));
                return Some((name, table.fields[from + at].value));
            }
        }
        let entry = *table.order[..table.names].get(self.next)?;
        self.next += 1;
        let name = table.name_of(entry);
        match entry.checked_sub(ADDED) {
            Some(added) => Some((name, table.added[added as usize].1)),
            None => {
                if table.repeated {
                    self.more_of = Some((name, entry as usize + 1));
                }
                Some((name, table.fields[entry as usize].value))
            }
        }
    }
}

impl HeaderTable for Fields<'_> {
    // The places of the eight read as one word: a bit for each byte that is not 0.
    fn hop_by_hop_present(&self) -> u32 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        let places: [u8; HOP_BY_HOP.len()] = self.known[..HOP_BY_HOP.len()]
            .try_into()
            .unwrap_or_default();
        let word = u64::from_le_bytes(places);
        // A byte's high bit once the byte is not 0 (no carries: each sum stays under 256).
        let not_zero = (((word & (0x7f * ONES)) + 0x7f * ONES) | word) & (0x80 * ONES);
        // Each byte's bit moved into the top byte, byte `i`'s at bit `56 + i` (the products
        // land on distinct bits, so none carries into another).
        ((not_zero >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
    }

    fn hop_by_hop_values(&self, at: usize) -> impl Iterator<Item = &[u8]> {
        self.known_values(Known::HOP_BY_HOP[at])
    }

    fn remove_hop_by_hop(&mut self, at: usize) {
        let known = Known::HOP_BY_HOP[at];
        self.remove_at(Some(known), self.known_position(known));
    }

    fn present_among(&self, names: &[HeaderName]) -> u32 {
        names.iter().enumerate().fold(0, |bits, (i, name)| {
            match self.contains(name.as_str().as_bytes()) {
                true => bits | 1 << i,
                false => bits,
            }
        })
    }

    fn values(&self, name: &HeaderName) -> impl Iterator<Item = &[u8]> {
        self.values_at(self.place(name.as_str().as_bytes()).1)
    }

    fn remove(&mut self, name: &HeaderName) {
        self.remove_name(name.as_str().as_bytes());
    }

    fn insert(&mut self, name: &'static HeaderName, value: &'static str) {
        self.set(name.as_str().as_bytes(), value.as_bytes());
    }
}

/// A `Content-Length` as hyper reads it: digits only, at most `u64::MAX`.
pub fn content_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |length, digit| {
        let digit = digit.checked_sub(b'0').filter(|digit| *digit < 10)?;
        length.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use hyper::{
        header::{self, HeaderValue},
        HeaderMap,
    };

    use super::*;
    use crate::http::{remove_headers, remove_hop_by_hop_headers, HOP_BY_HOP};

    /// `(name, value)` in lower case, as written.
    fn written<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<(String, String)> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_lowercase();
        fields.map(|(n, v)| (text(n), text(v))).collect()
    }

    /// Heads whose fields a map orders in its own way: repeated names in any case, names
    /// removed from the middle (the last name takes their place), names set again.
    const HEADS: [&str; 4] = [
        "A: 1\r\nConnection: x-b, keep-alive\r\nx-B: 2\r\nc: 3\r\na: 4\r\nTE: trailers\r\nD: 5\r\n",
        "Keep-Alive: 1\r\nE: 1\r\nUpgrade: x\r\nF: 2\r\ne: 3\r\nx-cheops-site: there\r\n",
        "te: gzip\r\nTE: trailers\r\nconnection: close, TE\r\nG: 1\r\n",
        "H: 1\r\nX-Cheops-Service: s\r\nh: 2\r\nTransfer-Encoding: chunked\r\nI: 3\r\n",
    ];

    #[test]
    fn every_set_of_hop_by_hop_names_is_told_present() {
        for present in 0..1u32 << HOP_BY_HOP.len() {
            let mut parsed = vec![httparse::Header {
                name: "x-other",
                value: b"1",
            }];
            for (i, name) in HOP_BY_HOP.iter().enumerate() {
                if present & 1 << i != 0 {
                    parsed.push(httparse::Header {
                        name: name.as_str(),
                        value: b"1",
                    });
                }
            }
            let mut fields = Fields::new(&parsed);
            fields.index();
            assert_eq!(fields.hop_by_hop_present(), present);
        }
    }

    #[test]
    fn the_fields_go_in_the_order_a_map_of_them_gives_after_the_same_changes() {
        for head in HEADS {
            let mut parsed = [httparse::EMPTY_HEADER; 16];
            let bytes = format!("{head}\r\n");
            httparse::parse_headers(bytes.as_bytes(), &mut parsed).unwrap();
            let parsed: Vec<_> = parsed
                .into_iter()
                .take_while(|f| !f.name.is_empty())
                .collect();
            let mut map = HeaderMap::new();
            for field in &parsed {
                let name = HeaderName::from_bytes(field.name.as_bytes()).unwrap();
                map.append(name, HeaderValue::from_bytes(field.value).unwrap());
            }
            let mut fields = Fields::new(&parsed);
            fields.index();
            let as_map = |map: &HeaderMap| {
                written(
                    map.iter()
                        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
                )
            };
            assert_eq!(written(fields.iter()), as_map(&map), "{head:?}");
            remove_hop_by_hop_headers(&mut fields);
            remove_hop_by_hop_headers(&mut map);
            assert_eq!(written(fields.iter()), as_map(&map), "{head:?}");
            let peers = [HeaderName::from_static("x-cheops-service")];
            remove_headers(&mut fields, &peers);
            remove_headers(&mut map, &peers);
            fields.set(b"x-cheops-site", b"here");
            map.insert("x-cheops-site", HeaderValue::from_static("here"));
            fields.set(b"connection", b"close");
            map.insert(header::CONNECTION, HeaderValue::from_static("close"));
            assert_eq!(written(fields.iter()), as_map(&map), "{head:?}");
            for name in HOP_BY_HOP.iter().chain([&header::HOST]) {
                let values = |of: Vec<&[u8]>| written(of.into_iter().map(|v| (v, v)));
                assert_eq!(
                    values(fields.values(name).collect()),
                    values(HeaderTable::values(&map, name).collect()),
                    "{name} in {head:?}"
                );
            }
        }
    }

    #[test]
    fn a_content_length_is_read_as_its_digits_parsed() {
        let lengths = [
            "",
            "0",
            "1024",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "+1",
            "-1",
            "1 ",
            " 1",
            "a",
            "12a",
            "1_0",
            "١",
        ];
        for length in lengths {
            let digits_only = !length.is_empty() && length.bytes().all(|b| b.is_ascii_digit());
            let parsed = length.parse::<u64>().ok().filter(|_| digits_only);
            assert_eq!(content_length(length.as_bytes()), parsed, "{length:?}");
        }
    }
}
