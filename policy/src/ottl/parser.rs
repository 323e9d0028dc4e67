//! An OTTL condition into a syntax tree, following the Collector's grammar
//! (pkg/ottl/grammar.go): `or` binds loosest, then `and`, then one optional
//! `not`, then a comparison of two values, then `+ -`, then `* /`. The
//! grammar's two kinds of parentheses (a boolean sub-expression, a math
//! sub-expression) are one here, and which kind a group is gets checked
//! when compiling: one pass, no backtracking, so any input parses in time
//! linear in its length. Nesting is limited to [`MAX_DEPTH`].

use super::SyntaxError;
use super::lexer::{CmpOp, Tok, Token, lex};

/// The deepest nesting of groups, calls, lists and maps accepted.
pub(crate) const MAX_DEPTH: usize = 32;

/// The most math operators in one condition: a chain of them nests the
/// tree one level per operator, and evaluation recurses that deep.
pub(crate) const MAX_OPERATORS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    /// Byte offset in the condition.
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    /// `+ - * /` as `'+'`, `'-'`, `'*'`, `'/'`.
    Math(char, Box<Node>, Box<Node>),
    /// A unary minus.
    Neg(Box<Node>),
    /// Parentheses.
    Group(Box<Node>),
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// An uppercase word not called: `SPAN_KIND_SERVER`.
    Enum(String),
    Path(Path),
    Call(Call),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Path {
    /// `name` and its keys, for each `.`-separated segment.
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub name: String,
    pub keys: Vec<Key>,
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    Str(String),
    Int(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub name: String,
    pub args: Vec<Arg>,
    /// Indexes applied to the result: `Split(x, ",")[0]`.
    pub keys: Vec<Key>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Arg {
    pub name: Option<String>,
    pub value: Node,
}

/// Parses a whole condition.
pub(crate) fn parse(src: &str) -> Result<Node, SyntaxError> {
    let tokens = lex(src)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
        operators: 0,
        end: src.len(),
    };
    if p.tokens.is_empty() {
        return Err(SyntaxError::new(0, "empty condition".into()));
    }
    let node = p.or()?;
    if let Some(t) = p.peek_token() {
        return Err(SyntaxError::new(
            t.at,
            format!("unexpected {}", describe(&t.tok)),
        ));
    }
    Ok(node)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    operators: usize,
    end: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Bytes(_) => "bytes literal".into(),
        Tok::Float(f) => format!("number {f}"),
        Tok::Int(i) => format!("number {i}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Not => "`not`".into(),
        Tok::Or => "`or`".into(),
        Tok::And => "`and`".into(),
        Tok::Cmp(op) => format!("`{}`", op.as_str()),
        Tok::AddSub(minus) => if *minus { "`-`" } else { "`+`" }.into(),
        Tok::MulDiv(div) => if *div { "`/`" } else { "`*`" }.into(),
        Tok::Bool(b) => format!("`{b}`"),
        Tok::Nil => "`nil`".into(),
        Tok::Equal => "`=`".into(),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBrace => "`{`".into(),
        Tok::RBrace => "`}`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::Colon => "`:`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Dot => "`.`".into(),
        Tok::Upper(w) | Tok::Lower(w) => format!("`{w}`"),
    }
}

impl Parser {
    fn peek_token(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Tok> {
        self.tokens.get(self.pos + ahead).map(|t| &t.tok)
    }

    /// Offset of the next token (or the end).
    fn here(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn unexpected(&self, expected: &str) -> SyntaxError {
        match self.peek_token() {
            Some(t) => SyntaxError::new(
                t.at,
                format!("expected {expected}, found {}", describe(&t.tok)),
            ),
            None => SyntaxError::new(self.end, format!("expected {expected}, found the end")),
        }
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), SyntaxError> {
        if self.peek() == Some(tok) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SyntaxError::new(
                self.here(),
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn operator(&mut self) -> Result<(), SyntaxError> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(SyntaxError::new(
                self.here(),
                format!("more than {MAX_OPERATORS} math operators in one condition"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn or(&mut self) -> Result<Node, SyntaxError> {
        let at = self.here();
        let first = self.and()?;
        if self.peek() != Some(&Tok::Or) {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            terms.push(self.and()?);
        }
        Ok(Node {
            kind: Kind::Or(terms),
            at,
        })
    }

    fn and(&mut self) -> Result<Node, SyntaxError> {
        let at = self.here();
        let first = self.not()?;
        if self.peek() != Some(&Tok::And) {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            terms.push(self.not()?);
        }
        Ok(Node {
            kind: Kind::And(terms),
            at,
        })
    }

    fn not(&mut self) -> Result<Node, SyntaxError> {
        let at = self.here();
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            if self.peek() == Some(&Tok::Not) {
                // The grammar takes one optional `not` per value.
                return Err(self.unexpected("a comparison, a boolean or `(`"));
            }
            let inner = self.comparison()?;
            return Ok(Node {
                kind: Kind::Not(Box::new(inner)),
                at,
            });
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Node, SyntaxError> {
        let at = self.here();
        let left = self.math()?;
        let Some(Tok::Cmp(op)) = self.peek().cloned() else {
            return Ok(left);
        };
        self.pos += 1;
        let right = self.math()?;
        if let Some(Tok::Cmp(_)) = self.peek() {
            return Err(self.unexpected("`and`, `or` or the end (comparisons do not chain)"));
        }
        Ok(Node {
            kind: Kind::Cmp(op, Box::new(left), Box::new(right)),
            at,
        })
    }

    fn math(&mut self) -> Result<Node, SyntaxError> {
        let mut left = self.term()?;
        while let Some(Tok::AddSub(minus)) = self.peek().cloned() {
            let at = self.here();
            self.operator()?;
            self.pos += 1;
            let right = self.term()?;
            left = Node {
                kind: Kind::Math(
                    if minus { '-' } else { '+' },
                    Box::new(left),
                    Box::new(right),
                ),
                at,
            };
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Node, SyntaxError> {
        let mut left = self.unary()?;
        while let Some(Tok::MulDiv(div)) = self.peek().cloned() {
            let at = self.here();
            self.operator()?;
            self.pos += 1;
            let right = self.unary()?;
            left = Node {
                kind: Kind::Math(if div { '/' } else { '*' }, Box::new(left), Box::new(right)),
                at,
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, SyntaxError> {
        let at = self.here();
        match self.peek() {
            Some(Tok::AddSub(minus)) => {
                let minus = *minus;
                self.pos += 1;
                // One sign only, before a literal, a path, a call or a group.
                if matches!(self.peek(), Some(Tok::AddSub(_))) {
                    return Err(self.unexpected("a value"));
                }
                let inner = self.primary()?;
                Ok(if minus {
                    Node {
                        kind: Kind::Neg(Box::new(inner)),
                        at,
                    }
                } else {
                    inner
                })
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Node, SyntaxError> {
        let Some(token) = self.peek_token().cloned() else {
            return Err(self.unexpected("a value"));
        };
        let at = token.at;
        let leaf = |kind| Ok(Node { kind, at });
        match token.tok {
            Tok::LParen => {
                self.pos += 1;
                self.enter()?;
                let inner = self.or()?;
                self.expect(&Tok::RParen, "`)`")?;
                self.leave();
                leaf(Kind::Group(Box::new(inner)))
            }
            Tok::Nil => {
                self.pos += 1;
                leaf(Kind::Nil)
            }
            Tok::Bool(b) => {
                self.pos += 1;
                leaf(Kind::Bool(b))
            }
            Tok::Int(i) => {
                self.pos += 1;
                leaf(Kind::Int(i))
            }
            Tok::Float(f) => {
                self.pos += 1;
                leaf(Kind::Float(f))
            }
            Tok::Str(s) => {
                self.pos += 1;
                leaf(Kind::Str(s))
            }
            Tok::Bytes(b) => {
                self.pos += 1;
                leaf(Kind::Bytes(b))
            }
            Tok::Upper(name) => {
                self.pos += 1;
                if self.peek() == Some(&Tok::LParen) {
                    let call = self.call(name)?;
                    leaf(Kind::Call(call))
                } else {
                    leaf(Kind::Enum(name))
                }
            }
            Tok::Lower(_) => {
                let path = self.path()?;
                leaf(Kind::Path(path))
            }
            Tok::LBracket => {
                self.pos += 1;
                self.enter()?;
                let mut items = Vec::new();
                if self.peek() != Some(&Tok::RBracket) {
                    loop {
                        items.push(self.math()?);
                        if self.peek() == Some(&Tok::Comma) {
                            self.pos += 1;
                            continue;
                        }
                        break;
                    }
                }
                self.expect(&Tok::RBracket, "`,` or `]`")?;
                self.leave();
                leaf(Kind::List(items))
            }
            Tok::LBrace => {
                self.pos += 1;
                self.enter()?;
                let mut items = Vec::new();
                while let Some(Tok::Str(key)) = self.peek().cloned() {
                    self.pos += 1;
                    self.expect(&Tok::Colon, "`:`")?;
                    items.push((key, self.math()?));
                    if self.peek() == Some(&Tok::Comma) {
                        self.pos += 1;
                    }
                }
                self.expect(&Tok::RBrace, "a string key or `}`")?;
                self.leave();
                leaf(Kind::Map(items))
            }
            _ => Err(self.unexpected("a value")),
        }
    }

    fn call(&mut self, name: String) -> Result<Call, SyntaxError> {
        self.expect(&Tok::LParen, "`(`")?;
        self.enter()?;
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::RParen) {
            loop {
                let name = match (self.peek(), self.peek_at(1)) {
                    (Some(Tok::Lower(n)), Some(Tok::Equal)) => {
                        let n = n.clone();
                        self.pos += 2;
                        Some(n)
                    }
                    _ => None,
                };
                let value = self.math()?;
                args.push(Arg { name, value });
                if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    continue;
                }
                break;
            }
        }
        self.expect(&Tok::RParen, "`,` or `)`")?;
        self.leave();
        let keys = self.keys()?;
        Ok(Call { name, args, keys })
    }

    fn keys(&mut self) -> Result<Vec<Key>, SyntaxError> {
        let mut keys = Vec::new();
        while self.peek() == Some(&Tok::LBracket) {
            self.pos += 1;
            let key = match self.next().map(|t| t.tok) {
                Some(Tok::Str(s)) => Key::Str(s),
                Some(Tok::Int(i)) => Key::Int(i),
                _ => {
                    self.pos -= 1;
                    return Err(self.unexpected(
                        "a string or integer key (keys computed from expressions are not supported)",
                    ));
                }
            };
            self.expect(&Tok::RBracket, "`]`")?;
            keys.push(key);
        }
        Ok(keys)
    }

    fn path(&mut self) -> Result<Path, SyntaxError> {
        let mut segments = Vec::new();
        loop {
            let at = self.here();
            let name = match self.next().map(|t| t.tok) {
                Some(Tok::Lower(n)) => n,
                _ => {
                    self.pos -= 1;
                    return Err(self.unexpected("a path segment"));
                }
            };
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(SyntaxError::new(
                    at,
                    format!("invalid path segment {name:?}: paths are lowercase"),
                ));
            }
            let keys = self.keys()?;
            segments.push(Segment { name, keys, at });
            if self.peek() == Some(&Tok::Dot) {
                self.pos += 1;
                continue;
            }
            return Ok(Path { segments });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n: &Node) -> String {
        match &n.kind {
            Kind::Or(v) => format!("or({})", v.iter().map(shape).collect::<Vec<_>>().join(", ")),
            Kind::And(v) => format!(
                "and({})",
                v.iter().map(shape).collect::<Vec<_>>().join(", ")
            ),
            Kind::Not(x) => format!("not({})", shape(x)),
            Kind::Cmp(op, a, b) => format!("({} {} {})", shape(a), op.as_str(), shape(b)),
            Kind::Math(op, a, b) => format!("({} {op} {})", shape(a), shape(b)),
            Kind::Neg(x) => format!("-{}", shape(x)),
            Kind::Group(x) => format!("[{}]", shape(x)),
            Kind::Nil => "nil".into(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::Float(f) => format!("{f:?}"),
            Kind::Str(s) => format!("{s:?}"),
            Kind::Bytes(b) => format!(
                "0x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
            Kind::Enum(e) => e.clone(),
            Kind::Path(p) => p
                .segments
                .iter()
                .map(|s| {
                    let keys: String = s
                        .keys
                        .iter()
                        .map(|k| match k {
                            Key::Str(s) => format!("[{s:?}]"),
                            Key::Int(i) => format!("[{i}]"),
                        })
                        .collect();
                    format!("{}{keys}", s.name)
                })
                .collect::<Vec<_>>()
                .join("."),
            Kind::Call(c) => format!(
                "{}({}){}",
                c.name,
                c.args
                    .iter()
                    .map(|a| match &a.name {
                        Some(n) => format!("{n}={}", shape(&a.value)),
                        None => shape(&a.value),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                c.keys.len()
            ),
            Kind::List(v) => format!(
                "list({})",
                v.iter().map(shape).collect::<Vec<_>>().join(", ")
            ),
            Kind::Map(v) => format!(
                "map({})",
                v.iter()
                    .map(|(k, n)| format!("{k:?}: {}", shape(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// pkg/ottl/parser_test.go, Test_parseCondition and
    /// Test_parseWhere_full: the tree each condition parses into.
    #[test]
    fn parser_test_condition_shapes() {
        let cases = [
            ("name == \"a\"", "(name == \"a\")"),
            // Test_parseWhere_full: "where == clause"
            ("name == \"fido\"", "(name == \"fido\")"),
            // "where != clause"
            ("name != \"fido\"", "(name != \"fido\")"),
            // "Converter == clause"
            (
                "Concat(\"hello\", \" world\") == \"hello world\"",
                "(Concat(\"hello\", \" world\")0 == \"hello world\")",
            ),
            // "double == clause"
            ("1.2 == 1.2", "(1.2 == 1.2)"),
            ("true == true", "(true == true)"),
            // "where and clause"
            (
                "name != \"foo\" and name != \"bar\"",
                "and((name != \"foo\"), (name != \"bar\"))",
            ),
            // "where or clause"
            (
                "name == \"foo\" or name == \"bar\"",
                "or((name == \"foo\"), (name == \"bar\"))",
            ),
            // "where and or clause": and binds tighter
            ("true and false or true", "or(and(true, false), true)"),
            ("true or false and true", "or(true, and(false, true))"),
            // "where parens"
            ("(true or false) and true", "and([or(true, false)], true)"),
            ("not true", "not(true)"),
            ("not (true or false)", "not([or(true, false)])"),
            ("not name == \"x\"", "not((name == \"x\"))"),
            // Math: * and / bind tighter than + and -.
            ("1 + 2 * 3 == 7", "((1 + (2 * 3)) == 7)"),
            ("(1 + 2) * 3 == 9", "(([(1 + 2)] * 3) == 9)"),
            ("10 - 2 - 3 == 5", "(((10 - 2) - 3) == 5)"),
            ("-attributes[\"x\"] < 0", "(-attributes[\"x\"] < 0)"),
            (
                "attributes[\"a\"][0][\"b\"] == nil",
                "(attributes[\"a\"][0][\"b\"] == nil)",
            ),
            (
                "resource.attributes[\"k\"] == 0x0102",
                "(resource.attributes[\"k\"] == 0x0102)",
            ),
            ("kind == SPAN_KIND_SERVER", "(kind == SPAN_KIND_SERVER)"),
            (
                "Split(name, \",\")[0] == \"a\"",
                "(Split(name, \",\")1 == \"a\")",
            ),
            (
                "Substring(target=name, start=0, length=1) == \"a\"",
                "(Substring(target=name, start=0, length=1)0 == \"a\")",
            ),
            (
                "attributes[\"l\"] == [1, 2.5, \"x\"]",
                "(attributes[\"l\"] == list(1, 2.5, \"x\"))",
            ),
            (
                "attributes[\"m\"] == {\"a\": 1, \"b\": [true]}",
                "(attributes[\"m\"] == map(\"a\": 1, \"b\": list(true)))",
            ),
            ("IsRootSpan()", "IsRootSpan()0"),
        ];
        for (src, want) in cases {
            let node = parse(src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
            assert_eq!(shape(&node), want, "{src}");
        }
    }

    #[test]
    fn parser_test_invalid_conditions() {
        let cases = [
            ("", 0),
            ("name ==", 7),
            ("name == \"a\" \"b\"", 12),
            ("(true", 5),
            ("true)", 4),
            ("not not true", 4),
            ("a == b == c", 7),
            ("Foo(", 4),
            ("attributes[name] == 1", 11),
            ("- - 1 == 1", 2),
            ("name.Upper == 1", 5),
        ];
        for (src, at) in cases {
            let e = parse(src).expect_err(src);
            assert_eq!(e.at, at, "{src}: {e:?}");
        }
    }

    #[test]
    fn nesting_is_limited() {
        let ok = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!(
            "{}true{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nested more than"), "{e:?}");
        let calls = format!("{}1{} == 1", "Int(".repeat(100), ")".repeat(100));
        assert!(parse(&calls).is_err());
        let lists = format!("{}1{} == 1", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&lists).is_err());
        let chain = format!("1{} == 1", " + 1".repeat(MAX_OPERATORS + 1));
        assert!(
            parse(&chain)
                .unwrap_err()
                .message
                .contains("math operators")
        );
        let chain = format!("1{} == 1", " + 1".repeat(MAX_OPERATORS));
        assert!(parse(&chain).is_ok());
    }
}
