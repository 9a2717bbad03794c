//! Reads the usual scope straight from its bytes, without tokens: ASCII, bare names, entries
//! in braces or not. What it does not know (quotes, non-ASCII, white space to fold in a name,
//! `service/site`, `prime`, deep nesting) and every mistake it leaves to the parser, which
//! reads the same text again and says what is wrong: errors come from one place. It builds
//! exactly what the parser builds, spans included (a proptest holds both to that).

use crate::check;
use crate::duration;
use crate::lexer::is_word_byte;
use crate::tree::{Entry, LocExpr, Name, Op, Site, Span, Written};

/// Deepest nesting read here; deeper scopes go to the parser, which refuses the deepest.
const NESTING: usize = 8;

/// The entries of `input`, or `None` for the parser to read it.
pub(crate) fn scope_lang(input: &str) -> Option<Written> {
    let mut reader = Reader {
        input,
        text: input.as_bytes(),
        pos: 0,
        last_end: 0,
        depth: 0,
    };
    let written = reader.entries()?;
    reader.skip_space();
    (reader.pos == input.len()).then_some(written)
}

struct Reader<'a> {
    input: &'a str,
    text: &'a [u8],
    pos: usize,
    /// Where the last token taken ended, as the parser counts a bare entry's span.
    last_end: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// `{` [entry (`,` entry)* [`,`]] `}`, or entry (`,` entry)*.
    fn entries(&mut self) -> Option<Written> {
        let mut written = Written::default();
        let braced = self.eat(b'{');
        if braced && self.eat(b'}') {
            return Some(written);
        }
        loop {
            self.entry(&mut written)?;
            if !self.eat(b',') {
                break;
            }
            if braced && self.eat(b'}') {
                return Some(written);
            }
        }
        (!braced || self.eat(b'}')).then_some(written)
    }

    /// `name: location` or a bare location, added to `written` (built in place there rather
    /// than returned: moving a fresh entry stalled the processor, as `site_at` tells).
    fn entry(&mut self, written: &mut Written) -> Option<()> {
        self.skip_space();
        let start = self.pos;
        if let Some(span) = self.name() {
            if self.eat(b':') {
                // The parser reads `prime: site` and reports what follows `prime:`.
                let service = self.written(span);
                if service == "prime" {
                    return None;
                }
                let location = self.location()?;
                let service = Name::read(service)?;
                written.push(Entry::Service { service, location }, span);
                return Some(());
            }
        }
        self.pos = start;
        let location = self.location()?;
        written.push(Entry::Bare(location), Span::new(start, self.last_end));
        Some(())
    }

    fn location(&mut self) -> Option<LocExpr> {
        let first = self.atom()?;
        self.chain_from(Op::Otherwise, first)
    }

    /// The chain of `op` or of a tighter operator that `first` starts, as the parser joins
    /// them; the tighter chains are looked for only when such an operator follows, so that a
    /// site alone costs one look. Inlined, so that a site alone is not passed on and moved
    /// back (such a move, just after it was built, stalls: see `site_at`).
    #[inline(always)]
    fn chain_from(&mut self, op: Op, first: LocExpr) -> Option<LocExpr> {
        match self.next_op().filter(|&next| next >= op) {
            Some(next) => self.chain(op, next, first),
            None => Some(first),
        }
    }

    /// The chain that `first` starts, `next` (`op` or a tighter operator) following it.
    fn chain(&mut self, op: Op, next: Op, mut first: LocExpr) -> Option<LocExpr> {
        if next > op {
            first = self.chain_from(tighter(op)?, first)?;
            if self.next_op() != Some(op) {
                return Some(first);
            }
        }
        let mut parts = Vec::with_capacity(4);
        parts.push(first);
        while self.take_op(op) {
            let atom = self.atom()?;
            parts.push(match tighter(op) {
                Some(inner) => self.chain_from(inner, atom)?,
                None => atom,
            });
        }
        let chain = LocExpr::chain(op, parts);
        check::chain_sites(&chain).ok()?;
        Some(chain)
    }

    /// A site, `( location )` or `around(site, duration)`. Inlined where it is read, the
    /// usual site is built where it is kept rather than returned and moved: moving a site
    /// just built stalls the processor (see `site_at`).
    #[inline(always)]
    fn atom(&mut self) -> Option<LocExpr> {
        if self.eat(b'(') {
            return self.group();
        }
        let span = self.name()?;
        if self.written(span) == "around" && self.eat(b'(') {
            let site = self.site()?;
            if !self.eat(b',') {
                return None;
            }
            let within = self.name()?;
            let within = duration::read(self.written(within)).ok()?;
            return self.eat(b')').then_some(LocExpr::Around { site, within });
        }
        Some(LocExpr::Site(self.site_at(span)?))
    }

    /// `( location )`, after its '('.
    fn group(&mut self) -> Option<LocExpr> {
        self.depth += 1;
        if self.depth > NESTING {
            return None;
        }
        let inner = self.location()?;
        self.depth -= 1;
        self.eat(b')').then_some(inner)
    }

    fn site(&mut self) -> Option<Site> {
        let span = self.name()?;
        self.site_at(span)
    }

    /// The site named at `span`. Names are made only where they are kept, and read as spans
    /// until then: a name just made and moved at once stalls the processor (its bytes, stored
    /// a few at a time, are loaded sixteen at a time, which waits until the stores are done),
    /// and such stalls stood out in perf profiles of the usual scope.
    fn site_at(&self, span: Span) -> Option<Site> {
        let name = Name::read(self.written(span))?;
        Some(Site { name, span })
    }

    fn written(&self, span: Span) -> &'a str {
        &self.input[span.start..span.end]
    }

    /// Where bare words joined by single spaces are written; `None` for anything else.
    fn name(&mut self) -> Option<Span> {
        self.skip_space();
        let start = self.pos;
        let mut end = self.word_end(start);
        if end == start {
            return None;
        }
        // Words joined by one space are one name.
        while self.text.get(end) == Some(&b' ') {
            let next = self.word_end(end + 1);
            if next == end + 1 {
                break;
            }
            end = next;
        }
        // White space left before a word would have to be folded: the parser's work.
        if self.text.get(end).is_some_and(u8::is_ascii_whitespace) {
            let next = self.space_end(end);
            if self.text.get(next).is_some_and(|&byte| is_word_byte(byte)) {
                return None;
            }
        }
        self.pos = end;
        self.last_end = end;
        Some(Span::new(start, end))
    }

    /// The end of the ASCII word characters from `from` on.
    fn word_end(&self, from: usize) -> usize {
        self.end_of(from, is_word_byte)
    }

    fn space_end(&self, from: usize) -> usize {
        self.end_of(from, |byte| byte.is_ascii_whitespace())
    }

    fn end_of(&self, from: usize, inside: impl Fn(u8) -> bool) -> usize {
        let mut at = from;
        while self.text.get(at).is_some_and(|&byte| inside(byte)) {
            at += 1;
        }
        at
    }

    fn skip_space(&mut self) {
        self.pos = self.space_end(self.pos);
    }

    /// Takes `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        let found = self.text.get(self.pos) == Some(&byte);
        if found {
            self.pos += 1;
            self.last_end = self.pos;
        }
        found
    }

    /// The operator that comes next, if one does.
    fn next_op(&mut self) -> Option<Op> {
        self.skip_space();
        self.text.get(self.pos).and_then(|&byte| op_of(byte))
    }

    /// Takes `op` if it comes next; `|` and `||` are older spellings of `;`.
    fn take_op(&mut self, op: Op) -> bool {
        if self.next_op() != Some(op) {
            return false;
        }
        let doubled = self.text[self.pos] == b'|' && self.text.get(self.pos + 1) == Some(&b'|');
        self.pos += 1 + usize::from(doubled);
        self.last_end = self.pos;
        true
    }
}

/// The operator that binds next tighter than `op`.
fn tighter(op: Op) -> Option<Op> {
    match op {
        Op::Otherwise => Some(Op::Replicate),
        Op::Replicate => Some(Op::Cross),
        Op::Cross => None,
    }
}

fn op_of(byte: u8) -> Option<Op> {
    match byte {
        b'&' => Some(Op::Replicate),
        b'%' => Some(Op::Cross),
        b';' | b'|' => Some(Op::Otherwise),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::scope_lang;
    use crate::parser;

    /// Both readers' entries and spans, as text: `Site`'s equality leaves spans out.
    fn read_usual(text: &str) -> Option<String> {
        scope_lang(text).map(|written| format!("{written:?}"))
    }

    fn read_by_parser(text: &str) -> String {
        let written = parser::from_tokens(text).expect("the usual reader took a bad scope");
        format!("{written:?}")
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c]{1,3}",
            "[A-Z][a-z]{0,5}( [a-z]{1,3})?",
            Just("around".to_owned())
        ]
    }

    /// Locations as people write them, with or without spaces and parentheses.
    fn location() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            3 => name(),
            1 => (name(), 0u32..200, prop::sample::select(vec!["us", "ms", "s"]))
                .prop_map(|(site, count, unit)| format!("around({site}, {count}{unit})")),
        ];
        leaf.prop_recursive(3, 12, 3, |part| {
            let op = prop::sample::select(vec![" & ", "&", " % ", " ; ", ";", " | ", " || "]);
            prop_oneof![
                (part.clone(), op, part.clone()).prop_map(|(a, op, b)| format!("{a}{op}{b}")),
                part.prop_map(|inner| format!("( {inner})")),
            ]
        })
    }

    fn scope() -> impl Strategy<Value = String> {
        let entry = prop_oneof![
            3 => (name(), location()).prop_map(|(service, at)| format!("{service}: {at}")),
            1 => location(),
        ];
        (prop::collection::vec(entry, 0..4), any::<bool>()).prop_map(|(entries, braced)| {
            let entries = entries.join(", ");
            if braced || entries.is_empty() {
                format!("{{{entries}}}")
            } else {
                entries
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        // The usual scope is read here, to the parser's entries and spans; what the parser
        // refuses (a site twice in a chain) is not.
        #[test]
        fn reads_what_the_parser_reads(text in scope()) {
            let by_parser = parser::from_tokens(&text).ok().map(|written| format!("{written:?}"));
            prop_assert_eq!(read_usual(&text), by_parser);
        }

        // Mistakes and rarities are left to the parser, never read otherwise.
        #[test]
        fn takes_nothing_the_parser_refuses(
            text in r#"[{}(),:;&%|/" \t]{0,3}([a-c]{1,2}|around|1ms|Zü)?([{}(),:;&%|/" \t]{0,2}([a-c]{1,2}|around|1ms|prime)){0,8}[{}(),:;&%| ]{0,3}"#
        ) {
            if let Some(usual) = read_usual(&text) {
                prop_assert_eq!(usual, read_by_parser(&text));
            }
        }
    }

    #[test]
    fn reads_the_usual_scope() {
        let text = "{compute: Nantes, image: Paris & Nantes & Lyon, catalog: around(Rennes, 10ms) ; Brest}";
        assert_eq!(read_usual(text), Some(read_by_parser(text)));
    }

    #[test]
    fn leaves_the_rest_to_the_parser() {
        for text in [
            "{a: \"Site #1\"}",
            "{a: Zürich}",
            "{a: Site  B}",
            "a/Paris",
            "{prime: Paris, a: Paris % Lyon}",
            "{a: Paris & Paris}",
            "{a: Paris,,}",
            "a: Paris,",
            "{a: around(Paris, 10)}",
        ] {
            assert_eq!(read_usual(text), None, "{text}");
        }
    }
}
