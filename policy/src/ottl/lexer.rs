//! Tokens of an OTTL condition, as the Collector's participle lexer
//! (pkg/ottl/grammar.go, `buildLexer`) cuts them: the rules are tried in
//! its order and the first that matches wins, so `-1` is one integer and
//! `1 -1` is two integers (a syntax error later), as there.
//!
//! Words differ in one way: the Collector lexes `IsMatch` as the tokens
//! `I`, `s`, `M`, `atch` and glues them back in the grammar; here a word is
//! one token (`[A-Za-z][A-Za-z0-9_]*`), classified by its first letter.

use super::SyntaxError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Bytes(Vec<u8>),
    Float(f64),
    Int(i64),
    Str(String),
    Not,
    Or,
    And,
    Cmp(CmpOp),
    /// `+` or `-` (true for `-`).
    AddSub(bool),
    /// `*` or `/` (true for `/`).
    MulDiv(bool),
    Bool(bool),
    Nil,
    Equal,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Colon,
    Comma,
    Dot,
    /// A word starting with an uppercase letter: a converter or an enum.
    Upper(String),
    /// A word starting with a lowercase letter: a path segment or an
    /// argument name.
    Lower(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub at: usize,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `\bword\b` at `at`: the keyword stands alone.
fn keyword(src: &[u8], at: usize, word: &str) -> bool {
    let end = at + word.len();
    src.get(at..end) == Some(word.as_bytes())
        && (at == 0 || !is_word(src[at - 1]))
        && src.get(end).is_none_or(|b| !is_word(*b))
}

fn digits(src: &[u8], mut i: usize) -> usize {
    while src.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// `[-+]?\d*\.\d+([eE][-+]?\d+)?`: the end of a float at `at`, if one.
fn float_end(src: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    if matches!(src.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    i = digits(src, i);
    if src.get(i) != Some(&b'.') {
        return None;
    }
    let frac = digits(src, i + 1);
    if frac == i + 1 {
        return None;
    }
    i = frac;
    if matches!(src.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(src.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        let exp = digits(src, j);
        if exp > j {
            i = exp;
        }
    }
    Some(i)
}

/// `[-+]?\d+`.
fn int_end(src: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    if matches!(src.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let end = digits(src, i);
    (end > i).then_some(end)
}

/// Cuts `src` into tokens.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, SyntaxError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at = i;
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // Bytes: 0x[a-fA-F0-9]+
        if c == b'0'
            && b.get(i + 1) == Some(&b'x')
            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            let mut end = i + 2;
            while b.get(end).is_some_and(u8::is_ascii_hexdigit) {
                end += 1;
            }
            let hex = &src[i + 2..end];
            let bytes = decode_hex(hex).ok_or_else(|| {
                SyntaxError::new(
                    at,
                    format!("invalid bytes literal 0x{hex}: odd number of hex digits"),
                )
            })?;
            out.push(Token {
                tok: Tok::Bytes(bytes),
                at,
            });
            i = end;
            continue;
        }
        if let Some(end) = float_end(b, i) {
            let text = &src[i..end];
            let v: f64 = text
                .parse()
                .map_err(|_| SyntaxError::new(at, format!("invalid float {text}")))?;
            out.push(Token {
                tok: Tok::Float(v),
                at,
            });
            i = end;
            continue;
        }
        if let Some(end) = int_end(b, i) {
            let text = &src[i..end];
            let v: i64 = text.parse().map_err(|_| {
                SyntaxError::new(
                    at,
                    format!("integer {text} is out of range for a 64-bit integer"),
                )
            })?;
            out.push(Token {
                tok: Tok::Int(v),
                at,
            });
            i = end;
            continue;
        }
        if c == b'"' {
            let (s, end) = string(src, i)?;
            out.push(Token {
                tok: Tok::Str(s),
                at,
            });
            i = end;
            continue;
        }
        let kw = [("not", Tok::Not), ("or", Tok::Or), ("and", Tok::And)]
            .into_iter()
            .find(|(w, _)| keyword(b, i, w));
        if let Some((w, tok)) = kw {
            out.push(Token { tok, at });
            i += w.len();
            continue;
        }
        let two = b.get(i..i + 2);
        let cmp = match two {
            Some(b"==") => Some((CmpOp::Eq, 2)),
            Some(b"!=") => Some((CmpOp::Ne, 2)),
            Some(b">=") => Some((CmpOp::Ge, 2)),
            Some(b"<=") => Some((CmpOp::Le, 2)),
            _ => match c {
                b'>' => Some((CmpOp::Gt, 1)),
                b'<' => Some((CmpOp::Lt, 1)),
                _ => None,
            },
        };
        if let Some((op, len)) = cmp {
            out.push(Token {
                tok: Tok::Cmp(op),
                at,
            });
            i += len;
            continue;
        }
        let simple = match c {
            b'+' => Some(Tok::AddSub(false)),
            b'-' => Some(Tok::AddSub(true)),
            b'*' => Some(Tok::MulDiv(false)),
            b'/' => Some(Tok::MulDiv(true)),
            _ => None,
        };
        if let Some(tok) = simple {
            out.push(Token { tok, at });
            i += 1;
            continue;
        }
        let booleans = [("true", true), ("false", false)]
            .into_iter()
            .find(|(w, _)| keyword(b, i, w));
        if let Some((w, v)) = booleans {
            out.push(Token {
                tok: Tok::Bool(v),
                at,
            });
            i += w.len();
            continue;
        }
        let punct = match c {
            b'=' => Some(Tok::Equal),
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b'{' => Some(Tok::LBrace),
            b'}' => Some(Tok::RBrace),
            b':' => Some(Tok::Colon),
            b',' => Some(Tok::Comma),
            b'.' => Some(Tok::Dot),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            _ => None,
        };
        if let Some(tok) = punct {
            out.push(Token { tok, at });
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() {
            let mut end = i + 1;
            while b.get(end).is_some_and(|x| is_word(*x)) {
                end += 1;
            }
            let word = src[i..end].to_string();
            let tok = if c.is_ascii_uppercase() {
                Tok::Upper(word)
            } else if word == "nil" {
                Tok::Nil
            } else {
                Tok::Lower(word)
            };
            out.push(Token { tok, at });
            i = end;
            continue;
        }
        let ch = src[i..].chars().next().unwrap_or('?');
        return Err(SyntaxError::new(at, format!("unexpected character {ch:?}")));
    }
    Ok(out)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// A string literal at `at` (`"(\\.|[^\\"])*"`), unquoted as Go's
/// `strconv.Unquote` does. Returns the text and the end offset.
fn string(src: &str, at: usize) -> Result<(String, usize), SyntaxError> {
    let b = src.as_bytes();
    let mut i = at + 1;
    // Find the closing quote first: an escape is a backslash and any char.
    loop {
        match b.get(i) {
            None => return Err(SyntaxError::new(at, "unterminated string".into())),
            Some(b'"') => break,
            Some(b'\\') => {
                // Skip the backslash and the whole next char.
                let next = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                i += 1 + next;
            }
            Some(_) => i += 1,
        }
    }
    let body = &src[at + 1..i.min(src.len())];
    let text = unquote(body).map_err(|m| SyntaxError::new(at, m))?;
    Ok((text, i + 1))
}

fn unquote(body: &str) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    let bad = |what: &str| format!("invalid escape in string: {what}");
    // Bytes from \x and octal escapes may form UTF-8 together.
    let mut raw: Vec<u8> = Vec::new();
    let flush = |raw: &mut Vec<u8>, out: &mut String| -> Result<(), String> {
        if !raw.is_empty() {
            let s = String::from_utf8(std::mem::take(raw))
                .map_err(|_| "string escapes do not form valid UTF-8".to_string())?;
            out.push_str(&s);
        }
        Ok(())
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut raw, &mut out)?;
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return Err(bad("a lone backslash"));
        };
        let simple = match e {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            _ => None,
        };
        if let Some(s) = simple {
            flush(&mut raw, &mut out)?;
            out.push(s);
            continue;
        }
        match e {
            'x' => {
                let h: String = chars.by_ref().take(2).collect();
                let v = (h.len() == 2)
                    .then(|| u8::from_str_radix(&h, 16).ok())
                    .flatten()
                    .ok_or_else(|| bad(&format!("\\x{h}")))?;
                raw.push(v);
            }
            'u' | 'U' => {
                let n = if e == 'u' { 4 } else { 8 };
                let h: String = chars.by_ref().take(n).collect();
                let ch = (h.len() == n)
                    .then(|| u32::from_str_radix(&h, 16).ok().and_then(char::from_u32))
                    .flatten()
                    .ok_or_else(|| bad(&format!("\\{e}{h}")))?;
                flush(&mut raw, &mut out)?;
                out.push(ch);
            }
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let o = format!("{e}{rest}");
                let v = (o.len() == 3)
                    .then(|| u8::from_str_radix(&o, 8).ok())
                    .flatten()
                    .ok_or_else(|| bad(&format!("\\{o}")))?;
                raw.push(v);
            }
            other => return Err(bad(&format!("\\{other}"))),
        }
    }
    flush(&mut raw, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    // pkg/ottl/lexer_test.go, Test_lexer (the cases that apply to conditions).
    #[test]
    fn lexer_test_cases() {
        assert_eq!(
            toks(r#"set(attributes["bytes"], 0x0102030405060708)"#),
            vec![
                Tok::Lower("set".into()),
                Tok::LParen,
                Tok::Lower("attributes".into()),
                Tok::LBracket,
                Tok::Str("bytes".into()),
                Tok::RBracket,
                Tok::Comma,
                Tok::Bytes(vec![1, 2, 3, 4, 5, 6, 7, 8]),
                Tok::RParen,
            ]
        );
        assert_eq!(
            toks("x where a == -1.5 and b != +2"),
            vec![
                Tok::Lower("x".into()),
                Tok::Lower("where".into()),
                Tok::Lower("a".into()),
                Tok::Cmp(CmpOp::Eq),
                Tok::Float(-1.5),
                Tok::And,
                Tok::Lower("b".into()),
                Tok::Cmp(CmpOp::Ne),
                Tok::Int(2),
            ]
        );
        assert_eq!(
            toks("1 + 2 * 3 / 4 - 5"),
            vec![
                Tok::Int(1),
                Tok::AddSub(false),
                Tok::Int(2),
                Tok::MulDiv(false),
                Tok::Int(3),
                Tok::MulDiv(true),
                Tok::Int(4),
                Tok::AddSub(true),
                Tok::Int(5),
            ]
        );
        // Without spaces the sign belongs to the number, as in the Collector.
        assert_eq!(toks("1 -5"), vec![Tok::Int(1), Tok::Int(-5)]);
        assert_eq!(
            toks("not true or false"),
            vec![Tok::Not, Tok::Bool(true), Tok::Or, Tok::Bool(false)]
        );
        assert_eq!(toks("nothing"), vec![Tok::Lower("nothing".into())]);
        assert_eq!(toks(".5e3"), vec![Tok::Float(500.0)]);
        assert_eq!(
            toks("SPAN_KIND_SERVER"),
            vec![Tok::Upper("SPAN_KIND_SERVER".into())]
        );
    }

    #[test]
    fn strings_unquote_as_go_does() {
        assert_eq!(
            toks(r#""a\"b\\c\n\t""#),
            vec![Tok::Str("a\"b\\c\n\t".into())]
        );
        assert_eq!(toks(r#""\x41\u00e9\101""#), vec![Tok::Str("AéA".into())]);
        assert_eq!(toks(r#""\xc3\xa9""#), vec![Tok::Str("é".into())]);
        assert!(lex(r#""unterminated"#).is_err());
        assert!(lex(r#""\q""#).is_err());
        assert!(lex("0x123").is_err());
        assert!(lex("99999999999999999999").is_err());
        assert!(lex("a # b").is_err());
    }
}
