//! 0.x URI templates (RFC 6570, levels 1 to 4) as regular expressions, the
//! way the reference hub's `github.com/yosida95/uritemplate` makes them:
//! each expression matches an optional run of the characters its operator
//! may produce (`{id}` matches `[unreserved,]*` or `%XX`, `{+path}` also
//! reserved characters, `{/a,b}` up to two `/`-separated segments, …). A
//! text that is not a valid template has no regex (it is an exact topic).
//!
//! Only the text of the regex is made here; it is compiled by the bounded
//! engine ([`super::engine`]) like a URL pattern's.

use std::fmt::Write as _;

use regex_syntax::escape;

/// `unreserved` of RFC 3986 as a regex class body.
const RE_UNRESERVED: &str = r"\x2d\x2e\x30-\x39\x41-\x5a\x5f\x61-\x7a\x7e";
/// `reserved` of RFC 3986 as a regex class body.
const RE_RESERVED: &str = r"\x21\x23\x24\x26-\x2c\x2f\x3a\x3b\x3d\x3f\x40\x5b\x5d";

/// How an expression's operator expands (RFC 6570, appendix A).
struct Operator {
    first: &'static str,
    sep: &'static str,
    named: bool,
    /// Reserved characters pass unencoded (`+` and `#`).
    reserved: bool,
}

fn operator(op: Option<char>) -> Option<Operator> {
    let (first, sep, named, reserved) = match op {
        None => ("", ",", false, false),
        Some('+') => ("", ",", false, true),
        Some('#') => ("#", ",", false, true),
        Some('.') => (".", ".", false, false),
        Some('/') => ("/", "/", false, false),
        Some(';') => (";", ";", true, false),
        Some('?') => ("?", "&", true, false),
        Some('&') => ("&", "&", true, false),
        _ => return None,
    };
    Some(Operator {
        first,
        sep,
        named,
        reserved,
    })
}

struct VarSpec {
    explode: bool,
}

/// The anchored regex for a URI template, or `None` when `template` is not
/// a valid one or its regex would be longer than `max_len` (one expression
/// may take hundreds of bytes: the work stops soon after `max_len`).
pub fn template_regex(template: &str, max_len: usize) -> Option<String> {
    let mut out = String::from("^");
    let mut rest = template;
    while !rest.is_empty() {
        if out.len() > max_len {
            return None;
        }
        if let Some(body) = rest.strip_prefix('{') {
            let end = body.find('}')?;
            expression_regex(&body[..end], &mut out)?;
            rest = &body[end + 1..];
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            let literal = &rest[..end];
            check_literal(literal)?;
            out.push('(');
            out.push_str(&escape(literal));
            out.push(')');
            rest = &rest[end..];
        }
    }
    out.push('$');
    (out.len() <= max_len).then_some(out)
}

/// Literals: RFC 6570 `literals` (any printable character except
/// `"'<>\^`{|}` and space, plus non-ASCII) or `%XX`.
fn check_literal(literal: &str) -> Option<()> {
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                for _ in 0..2 {
                    chars.next().filter(char::is_ascii_hexdigit)?;
                }
            }
            '!' | '#' | '$' | '&' | '('..=';' | '=' | '?'..='[' | ']' | '_' | 'a'..='z' | '~' => {}
            c if is_ucschar_or_iprivate(c) => {}
            _ => return None,
        }
    }
    Some(())
}

fn is_ucschar_or_iprivate(c: char) -> bool {
    let c = c as u32;
    matches!(c, 0xA0..=0xD7FF | 0xE000..=0xFDCF | 0xFDF0..=0xFFEF)
        || (c >= 0x10000 && (c & 0xFFFF) <= 0xFFFD && !(0xE0000..0xE1000).contains(&c))
}

/// Appends the regex of one `{…}` expression (its body without braces).
fn expression_regex(body: &str, out: &mut String) -> Option<()> {
    let op_char = body.chars().next().filter(|c| "+#./;?&=,!@|".contains(*c));
    let op = operator(op_char)?;
    let list = &body[op_char.map_or(0, char::len_utf8)..];
    let vars = list
        .split(',')
        .map(parse_varspec)
        .collect::<Option<Vec<_>>>()?;
    let exploded = vars.iter().any(|v| v.explode);
    if !op.first.is_empty() {
        out.push_str("(?:");
        out.push_str(&escape(op.first));
    }
    out.push('(');
    char_class(out, &op, op.named || vars[0].explode);
    if vars.len() > 1 || vars[0].explode {
        out.push_str("(?:");
        out.push_str(&escape(op.sep));
        char_class(out, &op, op.named || exploded);
        out.push(')');
        if exploded {
            out.push('*');
        } else {
            let _ = write!(out, "{{0,{}}}", vars.len() - 1);
        }
    }
    out.push(')');
    if !op.first.is_empty() {
        out.push(')');
    }
    out.push('?');
    Some(())
}

/// The characters one value may expand to, repeated.
fn char_class(out: &mut String, op: &Operator, named: bool) {
    out.push_str("(?:(?:[");
    if !op.reserved {
        out.push_str(r"\x2c");
        if named {
            out.push_str(r"\x3d");
        }
    }
    out.push_str(RE_UNRESERVED);
    if op.reserved {
        out.push_str(RE_RESERVED);
    }
    out.push_str("]|%[[:xdigit:]][[:xdigit:]])*)");
}

/// `varname[:max-length]` or `varname*`.
fn parse_varspec(spec: &str) -> Option<VarSpec> {
    let (name, explode) = match spec.strip_suffix('*') {
        Some(name) => (name, true),
        None => (spec, false),
    };
    let name = match name.split_once(':') {
        Some((name, max)) if !explode => {
            let valid = !max.is_empty()
                && max.len() <= 4
                && max.bytes().all(|b| b.is_ascii_digit())
                && !max.starts_with('0');
            valid.then_some(name)?
        }
        Some(_) => return None,
        None => name,
    };
    valid_varname(name).then_some(VarSpec { explode })
}

/// `varchar *( ["."] varchar )`, varchar = ALPHA / DIGIT / "_" / pct-encoded.
fn valid_varname(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes[0] == b'.' || bytes[bytes.len() - 1] == b'.' {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
                if !hex(i + 1) || !hex(i + 2) {
                    return false;
                }
                i += 3;
            }
            b'.' if bytes[i - 1] == b'.' => return false,
            b'.' | b'_' => i += 1,
            b if b.is_ascii_alphanumeric() => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated regexes are the reference library's.
    #[test]
    fn regex_shape() {
        assert_eq!(
            template_regex("/b/{id}", usize::MAX).unwrap(),
            r"^(/b/)((?:(?:[\x2c\x2d\x2e\x30-\x39\x41-\x5a\x5f\x61-\x7a\x7e]|%[[:xdigit:]][[:xdigit:]])*))?$"
        );
        assert!(
            template_regex("/{+p}", usize::MAX)
                .unwrap()
                .contains(RE_RESERVED)
        );
        let long = "/x{+a}{+b}{+c}";
        let length = template_regex(long, usize::MAX).unwrap().len();
        assert_eq!(template_regex(long, length).map(|r| r.len()), Some(length));
        assert_eq!(template_regex(long, length - 1), None);
    }
}
