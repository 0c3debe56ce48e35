//! Owns the FHIRPath subset used by search-parameter expressions and subscription-topic criteria:
//! lexer, parser (refusing anything outside the subset at parse time) and an evaluator over
//! `serde_json` values that borrows from the input wherever it can.
//!
//! Supported: paths with implicit flattening, type-prefixed roots (`Task.owner`), choice types
//! (`value` → `valueString`, `valueReference`, …), indexers, `where`, `select`, `all`, `exists`,
//! `empty`, `first`, `last`, `tail`, `single`, `count`, `not`, `distinct`, `hasValue`, `ofType`,
//! `as`, `is`, `resolve`, `startsWith`, `endsWith`, `contains` (string), `lower`, `upper`,
//! `length`, `union`, `iif`, `extension`, operators `|` `=` `!=` `~` `!~` `<` `>` `<=` `>=` `and`
//! `or` `xor` `implies` `in` `contains` `is` `as`, literals (string, number, boolean, `@date`,
//! `{}`), `%variables` and `$this`.

use crate::FhirError;
use crate::date::{Precision, parse_range};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------------
// Public surface
// ---------------------------------------------------------------------------------------------

/// A parsed FHIRPath expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    root: Node,
    text: String,
}

/// Evaluation context: the focus resource and the environment variables.
#[derive(Clone, Debug, Default)]
pub struct Context<'a> {
    /// The resource the expression is evaluated on (also `%resource`, `%rootResource`,
    /// `%context` and the initial `$this`).
    pub resource: Option<&'a Value>,
    /// `%previous`, `%current`, … (keys with or without the `%`); `None` = the empty collection.
    pub variables: HashMap<String, Option<&'a Value>>,
}

impl<'a> Context<'a> {
    /// A context on `resource` with no variables.
    pub fn on(resource: &'a Value) -> Self {
        Context {
            resource: Some(resource),
            variables: HashMap::new(),
        }
    }
}

/// Longest expression text accepted, in bytes. Topic criteria are written by clients, so everything
/// an expression can cost is bounded; the longest official search-parameter expression Herald
/// embeds (R5 `clinical-patient`) is under 3 000 bytes.
pub const MAX_EXPRESSION_BYTES: usize = 8192;

/// Deepest expression tree accepted: nested parentheses, arguments and indexers, chained
/// invocations (`.not().not()…`) and operator chains all count. Parsing and evaluation recurse
/// along the tree, so this bounds their stack use; real criteria stay below 15.
pub const MAX_DEPTH: usize = 64;

/// Evaluation steps one evaluation may take (a step is a node visited or an item it handles;
/// a pairwise comparison of n items costs n²). Nested `where`/`select` over large collections
/// multiply; past the budget the evaluation fails instead of holding the write path (a few
/// milliseconds of CPU at most). Real criteria and search expressions on real resources take
/// well under 1 000.
pub const MAX_STEPS: u64 = 100_000;

/// Parses `text`; constructs outside the subset give `FhirPathUnsupported` naming them, syntax
/// errors give `FhirPath`, and an expression over [`MAX_EXPRESSION_BYTES`] or [`MAX_DEPTH`]
/// gives `FhirPathLimit`.
pub fn parse(text: &str) -> Result<Expression, FhirError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(FhirError::FhirPathLimit(format!(
            "the expression is {} bytes long; the limit is {MAX_EXPRESSION_BYTES}",
            text.len()
        )));
    }
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        nesting: 0,
    };
    let (root, _) = p.expr(0)?;
    if let Some(t) = p.peek() {
        return Err(FhirError::FhirPath(format!(
            "unexpected {} in '{text}'",
            t.describe()
        )));
    }
    Ok(Expression {
        root,
        text: text.to_string(),
    })
}

impl Expression {
    /// The source text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates the expression; the result is a collection (owned copies).
    pub fn evaluate(&self, ctx: &Context) -> Result<Vec<Value>, FhirError> {
        Ok(self
            .evaluate_refs(ctx)?
            .into_iter()
            .map(Cow::into_owned)
            .collect())
    }

    /// Evaluates the expression, borrowing result items from the context where possible.
    pub fn evaluate_refs<'a>(&self, ctx: &Context<'a>) -> Result<Vec<Cow<'a, Value>>, FhirError> {
        let focus: Vec<Item<'a>> = ctx.resource.map(Item::borrowed).into_iter().collect();
        let steps = Cell::new(MAX_STEPS);
        let env = Env {
            ctx,
            this: &focus,
            steps: &steps,
        };
        Ok(eval(&self.root, &focus, &env)?
            .into_iter()
            .map(|i| i.v)
            .collect())
    }

    /// Evaluates the expression as a criterion ([`is_truthy`] of the result).
    pub fn evaluate_bool(&self, ctx: &Context) -> Result<bool, FhirError> {
        let r = self.evaluate_refs(ctx)?;
        Ok(match r.as_slice() {
            [] => false,
            [one] => !matches!(one.as_ref(), Value::Bool(false)),
            _ => true,
        })
    }

    /// Keeps only the top-level union branches that apply to `resource_type`: those whose leftmost
    /// identifier is that type, `Resource` or `DomainResource`, or that start with no type at all.
    /// Returns `None` when no branch applies.
    pub fn for_resource_type(&self, resource_type: &str) -> Option<Expression> {
        let mut branches = Vec::new();
        split_union(&self.root, &mut branches);
        let kept: Vec<Node> = branches
            .into_iter()
            .filter(|b| match leftmost_ident(b) {
                Some(name) if starts_upper(name) => {
                    name == resource_type || name == "Resource" || name == "DomainResource"
                }
                _ => true,
            })
            .cloned()
            .collect();
        let root = match kept.len() {
            0 => return None,
            1 => kept.into_iter().next()?,
            _ => Node::Union(kept),
        };
        Some(Expression {
            root,
            text: self.text.clone(),
        })
    }
}

/// FHIRPath boolean semantics for a criteria result: single `true` → true; empty → false; single
/// `false` → false; anything else (non-boolean items, several items) → true (exists).
pub fn is_truthy(result: &[Value]) -> bool {
    match result {
        [] => false,
        [Value::Bool(b)] => *b,
        _ => true,
    }
}

fn starts_upper(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

fn split_union<'n>(n: &'n Node, out: &mut Vec<&'n Node>) {
    if let Node::Union(branches) = n {
        for b in branches {
            split_union(b, out);
        }
    } else {
        out.push(n);
    }
}

fn leftmost_ident(n: &Node) -> Option<&str> {
    match n {
        Node::Ident(s) => Some(s),
        Node::Member(t, _) | Node::Index(t, _) | Node::TypeOp(t, _, _) => leftmost_ident(t),
        Node::Call {
            target: Some(t), ..
        } => leftmost_ident(t),
        Node::Bin(_, l, _) => leftmost_ident(l),
        Node::Union(branches) => branches.first().and_then(leftmost_ident),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// Backtick-delimited identifier (never a keyword).
    QIdent(String),
    Str(String),
    Num(String),
    Date(String),
    Var(String),
    Special(String),
    Sym(&'static str),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::QIdent(s) => format!("identifier '{s}'"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Num(s) => format!("number {s}"),
            Tok::Date(s) => format!("date @{s}"),
            Tok::Var(s) => format!("%{s}"),
            Tok::Special(s) => format!("${s}"),
            Tok::Sym(s) => format!("'{s}'"),
        }
    }
}

const SYMS: [&str; 22] = [
    "!=", "!~", "<=", ">=", ".", ",", "(", ")", "[", "]", "{", "}", "|", "=", "~", "<", ">", "+",
    "-", "*", "/", "&",
];

fn lex(text: &str) -> Result<Vec<Tok>, FhirError> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |m: &str| FhirError::FhirPath(format!("{m} in '{text}'"));
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let s = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[s..i].iter().collect()));
        } else if c == '`' {
            let (s, ni) = delimited(&chars, i, '`').ok_or_else(|| err("unterminated `"))?;
            out.push(Tok::QIdent(s));
            i = ni;
        } else if c == '\'' {
            let (s, ni) = delimited(&chars, i, '\'').ok_or_else(|| err("unterminated string"))?;
            out.push(Tok::Str(s));
            i = ni;
        } else if c.is_ascii_digit() {
            let s = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push(Tok::Num(chars[s..i].iter().collect()));
            // Quantity literals (`4 days`, `1 'mg'`) are outside the subset.
            if chars.get(i) == Some(&' ')
                && chars[i..].iter().find(|c| !c.is_whitespace()) == Some(&'\'')
            {
                return Err(FhirError::FhirPathUnsupported("quantity literal".into()));
            }
        } else if c == '@' {
            let s = i + 1;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || matches!(chars[i], '-' | ':' | 'T' | '.' | '+' | 'Z'))
            {
                i += 1;
            }
            out.push(Tok::Date(chars[s..i].iter().collect()));
        } else if c == '%' || c == '$' {
            i += 1;
            let name = if chars.get(i) == Some(&'`') || chars.get(i) == Some(&'\'') {
                let q = chars[i];
                let (s, ni) = delimited(&chars, i, q).ok_or_else(|| err("unterminated name"))?;
                i = ni;
                s
            } else {
                let s = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                {
                    i += 1;
                }
                chars[s..i].iter().collect()
            };
            if name.is_empty() {
                return Err(err(&format!("empty name after {c}")));
            }
            out.push(if c == '%' {
                Tok::Var(name)
            } else {
                Tok::Special(name)
            });
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            match SYMS.iter().find(|s| rest.starts_with(**s)) {
                Some(s) => {
                    out.push(Tok::Sym(s));
                    i += s.len();
                }
                None => return Err(err(&format!("unexpected character '{c}'"))),
            }
        }
    }
    Ok(out)
}

/// Reads a `q`-delimited token starting at `start` (which holds `q`), handling escapes.
fn delimited(chars: &[char], start: usize, q: char) -> Option<(String, usize)> {
    let mut i = start + 1;
    let mut s = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == q {
            return Some((s, i + 1));
        }
        if c == '\\' {
            i += 1;
            let e = *chars.get(i)?;
            match e {
                'n' => s.push('\n'),
                't' => s.push('\t'),
                'r' => s.push('\r'),
                'f' => s.push('\u{c}'),
                'u' => {
                    let hex: String = chars.get(i + 1..i + 5)?.iter().collect();
                    s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    i += 4;
                }
                other => s.push(other),
            }
        } else {
            s.push(c);
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// AST and parser
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Implies,
    Or,
    Xor,
    And,
    In,
    Contains,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TypeOp {
    Is,
    As,
    OfType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    Where,
    Select,
    All,
    Exists,
    Empty,
    First,
    Last,
    Tail,
    Single,
    Count,
    Not,
    Distinct,
    HasValue,
    Resolve,
    StartsWith,
    EndsWith,
    StrContains,
    Lower,
    Upper,
    Length,
    Union,
    Iif,
    Extension,
}

impl Func {
    /// (function, min args, max args)
    fn lookup(name: &str) -> Option<(Func, usize, usize)> {
        Some(match name {
            "where" => (Func::Where, 1, 1),
            "select" => (Func::Select, 1, 1),
            "all" => (Func::All, 1, 1),
            "exists" => (Func::Exists, 0, 1),
            "empty" => (Func::Empty, 0, 0),
            "first" => (Func::First, 0, 0),
            "last" => (Func::Last, 0, 0),
            "tail" => (Func::Tail, 0, 0),
            "single" => (Func::Single, 0, 0),
            "count" => (Func::Count, 0, 0),
            "not" => (Func::Not, 0, 0),
            "distinct" => (Func::Distinct, 0, 0),
            "hasValue" => (Func::HasValue, 0, 0),
            "resolve" => (Func::Resolve, 0, 0),
            "startsWith" => (Func::StartsWith, 1, 1),
            "endsWith" => (Func::EndsWith, 1, 1),
            "contains" => (Func::StrContains, 1, 1),
            "lower" => (Func::Lower, 0, 0),
            "upper" => (Func::Upper, 0, 0),
            "length" => (Func::Length, 0, 0),
            "union" => (Func::Union, 1, 1),
            "iif" => (Func::Iif, 2, 3),
            "extension" => (Func::Extension, 1, 1),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Empty,
    /// A literal with its FHIRPath type name when it is not evident from JSON (dates).
    Literal(Value, Option<&'static str>),
    This,
    Var(String),
    Ident(String),
    Member(Box<Node>, String),
    Index(Box<Node>, Box<Node>),
    Call {
        target: Option<Box<Node>>,
        func: Func,
        args: Vec<Node>,
    },
    TypeOp(Box<Node>, TypeOp, String),
    Bin(Op, Box<Node>, Box<Node>),
    /// `a | b | c`: the distinct items of every branch, in order.
    Union(Vec<Node>),
}

/// Recursive-descent parser. Every method returns its node with the node's depth (the longest
/// path to a leaf), and refuses a node deeper than [`MAX_DEPTH`] as soon as it would be built;
/// `nesting` counts the recursion itself, which can run ahead of any node (`((((…`).
struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    nesting: usize,
}

/// A parsed node and its depth.
type Parsed = (Node, usize);

fn too_deep() -> FhirError {
    FhirError::FhirPathLimit(format!(
        "the expression nests deeper than {MAX_DEPTH} levels"
    ))
}

/// The depth of a node built over children of depth `child`, refused beyond [`MAX_DEPTH`].
fn over(child: usize) -> Result<usize, FhirError> {
    if child >= MAX_DEPTH {
        Err(too_deep())
    } else {
        Ok(child + 1)
    }
}

fn unsupported(what: &str) -> FhirError {
    FhirError::FhirPathUnsupported(what.to_string())
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, sym: &'static str) -> Result<(), FhirError> {
        match self.next() {
            Some(Tok::Sym(s)) if s == sym => Ok(()),
            Some(t) => Err(FhirError::FhirPath(format!(
                "expected '{sym}', found {}",
                t.describe()
            ))),
            None => Err(FhirError::FhirPath(format!(
                "expected '{sym}', found end of expression"
            ))),
        }
    }

    /// The binary operator at the cursor with its precedence (higher binds tighter).
    fn infix(&self) -> Result<Option<(Infix, u8)>, FhirError> {
        let Some(t) = self.peek() else {
            return Ok(None);
        };
        Ok(Some(match t {
            Tok::Ident(s) => match s.as_str() {
                "implies" => (Infix::Op(Op::Implies), 1),
                "or" => (Infix::Op(Op::Or), 2),
                "xor" => (Infix::Op(Op::Xor), 2),
                "and" => (Infix::Op(Op::And), 3),
                "in" => (Infix::Op(Op::In), 4),
                "contains" => (Infix::Op(Op::Contains), 4),
                "is" => (Infix::Type(TypeOp::Is), 8),
                "as" => (Infix::Type(TypeOp::As), 8),
                "div" | "mod" => return Err(unsupported(&format!("operator {s}"))),
                _ => return Ok(None),
            },
            Tok::Sym(s) => match *s {
                "=" => (Infix::Op(Op::Eq), 5),
                "!=" => (Infix::Op(Op::Ne), 5),
                "~" => (Infix::Op(Op::Equiv), 5),
                "!~" => (Infix::Op(Op::NotEquiv), 5),
                "<" => (Infix::Op(Op::Lt), 6),
                ">" => (Infix::Op(Op::Gt), 6),
                "<=" => (Infix::Op(Op::Le), 6),
                ">=" => (Infix::Op(Op::Ge), 6),
                "|" => (Infix::Union, 7),
                "+" | "-" | "*" | "/" | "&" => return Err(unsupported(&format!("operator {s}"))),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        }))
    }

    fn expr(&mut self, min_prec: u8) -> Result<Parsed, FhirError> {
        if self.nesting >= MAX_DEPTH {
            return Err(too_deep());
        }
        self.nesting += 1;
        let parsed = self.expr_inner(min_prec);
        self.nesting -= 1;
        parsed
    }

    fn expr_inner(&mut self, min_prec: u8) -> Result<Parsed, FhirError> {
        let (mut left, mut depth) = self.postfix()?;
        while let Some((op, prec)) = self.infix()? {
            if prec < min_prec {
                break;
            }
            self.pos += 1;
            (left, depth) = match op {
                Infix::Type(t) => {
                    let ty = self.type_spec()?;
                    (Node::TypeOp(Box::new(left), t, ty), over(depth)?)
                }
                Infix::Op(o) => {
                    let (right, rd) = self.expr(prec + 1)?;
                    (
                        Node::Bin(o, Box::new(left), Box::new(right)),
                        over(depth.max(rd))?,
                    )
                }
                Infix::Union => {
                    let (right, rd) = self.expr(prec + 1)?;
                    match left {
                        Node::Union(mut branches) => {
                            branches.push(right);
                            (Node::Union(branches), depth.max(over(rd)?))
                        }
                        single => (Node::Union(vec![single, right]), over(depth.max(rd))?),
                    }
                }
            };
        }
        Ok((left, depth))
    }

    fn type_spec(&mut self) -> Result<String, FhirError> {
        let mut name = match self.next() {
            Some(Tok::Ident(s) | Tok::QIdent(s)) => s,
            other => {
                return Err(FhirError::FhirPath(format!(
                    "expected a type name, found {}",
                    other.map_or("end of expression".into(), |t| t.describe())
                )));
            }
        };
        while self.peek() == Some(&Tok::Sym(".")) {
            self.pos += 1;
            match self.next() {
                Some(Tok::Ident(s) | Tok::QIdent(s)) => {
                    name.push('.');
                    name.push_str(&s);
                }
                _ => return Err(FhirError::FhirPath("expected a type name after '.'".into())),
            }
        }
        Ok(name)
    }

    fn postfix(&mut self) -> Result<Parsed, FhirError> {
        let (mut node, mut depth) = self.term()?;
        loop {
            match self.peek() {
                Some(Tok::Sym(".")) => {
                    self.pos += 1;
                    let name = match self.next() {
                        Some(Tok::Ident(s) | Tok::QIdent(s)) => s,
                        other => {
                            return Err(FhirError::FhirPath(format!(
                                "expected a name after '.', found {}",
                                other.map_or("end of expression".into(), |t| t.describe())
                            )));
                        }
                    };
                    if self.peek() == Some(&Tok::Sym("(")) {
                        (node, depth) = self.call(Some((node, depth)), &name)?;
                    } else {
                        node = Node::Member(Box::new(node), name);
                        depth = over(depth)?;
                    }
                }
                Some(Tok::Sym("[")) => {
                    self.pos += 1;
                    let (idx, id) = self.expr(0)?;
                    self.expect("]")?;
                    node = Node::Index(Box::new(node), Box::new(idx));
                    depth = over(depth.max(id))?;
                }
                _ => return Ok((node, depth)),
            }
        }
    }

    fn call(&mut self, target: Option<Parsed>, name: &str) -> Result<Parsed, FhirError> {
        self.expect("(")?;
        let (target, mut depth) = match target {
            Some((t, d)) => (Some(Box::new(t)), d),
            None => (None, 0),
        };
        if matches!(name, "ofType" | "as" | "is") {
            let ty = self.type_spec()?;
            self.expect(")")?;
            let op = match name {
                "ofType" => TypeOp::OfType,
                "as" => TypeOp::As,
                _ => TypeOp::Is,
            };
            let t = target.map_or(Node::This, |b| *b);
            return Ok((Node::TypeOp(Box::new(t), op, ty), over(depth)?));
        }
        let Some((func, min, max)) = Func::lookup(name) else {
            return Err(unsupported(&format!("function {name}")));
        };
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::Sym(")")) {
            loop {
                let (a, ad) = self.expr(0)?;
                depth = depth.max(ad);
                args.push(a);
                if self.peek() == Some(&Tok::Sym(",")) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(")")?;
        if args.len() < min || args.len() > max {
            return Err(FhirError::FhirPath(format!(
                "function {name} takes {min}..{max} arguments, got {}",
                args.len()
            )));
        }
        Ok((Node::Call { target, func, args }, over(depth)?))
    }

    fn term(&mut self) -> Result<Parsed, FhirError> {
        match (self.peek(), self.toks.get(self.pos + 1)) {
            (Some(Tok::Sym("(")), _) => {
                self.pos += 1;
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            (Some(Tok::Ident(name)), Some(Tok::Sym("("))) => {
                let name = name.clone();
                self.pos += 1;
                self.call(None, &name)
            }
            _ => Ok((self.leaf()?, 1)),
        }
    }

    /// A term without sub-expressions.
    fn leaf(&mut self) -> Result<Node, FhirError> {
        let Some(t) = self.next() else {
            return Err(FhirError::FhirPath("unexpected end of expression".into()));
        };
        match t {
            Tok::Str(s) => Ok(Node::Literal(Value::String(s), None)),
            Tok::Num(n) => Ok(Node::Literal(number_value(&n)?, None)),
            Tok::Date(d) => {
                if let Some(time) = d.strip_prefix('T') {
                    return Ok(Node::Literal(Value::String(time.into()), Some("time")));
                }
                let Some((_, prec)) = parse_range(&d) else {
                    return Err(FhirError::FhirPath(format!("invalid date literal @{d}")));
                };
                let ty = if prec <= Precision::Day && !d.contains('T') {
                    "date"
                } else {
                    "dateTime"
                };
                Ok(Node::Literal(
                    Value::String(d.trim_end_matches('T').into()),
                    Some(ty),
                ))
            }
            Tok::Var(v) => Ok(Node::Var(v)),
            Tok::Special(s) => match s.as_str() {
                "this" => Ok(Node::This),
                other => Err(unsupported(&format!("${other}"))),
            },
            Tok::Sym("{") => {
                self.expect("}")?;
                Ok(Node::Empty)
            }
            Tok::Sym("-") => match self.next() {
                Some(Tok::Num(n)) => Ok(Node::Literal(number_value(&format!("-{n}"))?, None)),
                _ => Err(unsupported("unary operator -")),
            },
            Tok::Sym("+") => Err(unsupported("unary operator +")),
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Node::Literal(Value::Bool(true), None)),
                "false" => Ok(Node::Literal(Value::Bool(false), None)),
                _ => Ok(Node::Ident(name)),
            },
            Tok::QIdent(name) => Ok(Node::Ident(name)),
            Tok::Sym(s) => Err(FhirError::FhirPath(format!("unexpected '{s}'"))),
        }
    }
}

enum Infix {
    Op(Op),
    Type(TypeOp),
    /// `|`: chains into one n-ary node, so that the long unions of search-parameter
    /// expressions (60+ resource types) are wide, not deep.
    Union,
}

fn number_value(text: &str) -> Result<Value, FhirError> {
    serde_json::from_str::<Value>(text)
        .map_err(|e| FhirError::FhirPath(format!("invalid number {text}: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Kind {
    /// Type known only from the JSON shape.
    Plain,
    /// Type known from a choice suffix or a literal.
    Typed(String),
    /// Result of `resolve()`: the referenced type, when it can be told.
    Resolved(Option<String>),
}

#[derive(Clone, Debug)]
struct Item<'a> {
    v: Cow<'a, Value>,
    kind: Kind,
}

impl<'a> Item<'a> {
    fn borrowed(v: &'a Value) -> Self {
        Item {
            v: Cow::Borrowed(v),
            kind: Kind::Plain,
        }
    }
    fn owned(v: Value) -> Self {
        Item {
            v: Cow::Owned(v),
            kind: Kind::Plain,
        }
    }
    fn boolean(b: bool) -> Vec<Self> {
        vec![Item::owned(Value::Bool(b))]
    }
}

struct Env<'c, 'a> {
    ctx: &'c Context<'a>,
    this: &'c [Item<'a>],
    /// Steps left in this evaluation's budget ([`MAX_STEPS`]), shared by nested environments.
    steps: &'c Cell<u64>,
}

impl Env<'_, '_> {
    /// Takes `n` steps from the budget, failing once it is spent.
    fn charge(&self, n: usize) -> Result<(), FhirError> {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        match self.steps.get().checked_sub(n) {
            Some(left) => {
                self.steps.set(left);
                Ok(())
            }
            None => {
                self.steps.set(0);
                Err(FhirError::FhirPathLimit(format!(
                    "the evaluation took more than {MAX_STEPS} steps"
                )))
            }
        }
    }
}

type Coll<'a> = Vec<Item<'a>>;

/// FHIR data type names that can appear as choice-element suffixes.
const CHOICE_TYPES: &[&str] = &[
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "Availability",
    "Base64Binary",
    "Boolean",
    "Canonical",
    "Code",
    "CodeableConcept",
    "CodeableReference",
    "Coding",
    "ContactDetail",
    "ContactPoint",
    "Count",
    "DataRequirement",
    "Date",
    "DateTime",
    "Decimal",
    "Distance",
    "Dosage",
    "Duration",
    "Expression",
    "ExtendedContactDetail",
    "HumanName",
    "Id",
    "Identifier",
    "Instant",
    "Integer",
    "Integer64",
    "Markdown",
    "Meta",
    "Money",
    "Oid",
    "ParameterDefinition",
    "Period",
    "PositiveInt",
    "Quantity",
    "Range",
    "Ratio",
    "RatioRange",
    "Reference",
    "RelatedArtifact",
    "SampledData",
    "Signature",
    "String",
    "Time",
    "Timing",
    "TriggerDefinition",
    "UnsignedInt",
    "Uri",
    "Url",
    "UsageContext",
    "Uuid",
];

/// Primitive type names (FHIR spelling).
const PRIMITIVES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "integer64",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
];

fn choice_type_name(suffix: &str) -> Option<String> {
    if !CHOICE_TYPES.contains(&suffix) {
        return None;
    }
    let mut lower = suffix.to_string();
    if let Some(first) = lower.get_mut(0..1) {
        first.make_ascii_lowercase();
    }
    Some(if PRIMITIVES.contains(&lower.as_str()) {
        lower
    } else {
        suffix.to_string()
    })
}

fn push_value<'a>(out: &mut Coll<'a>, v: Cow<'a, Value>, kind: &Kind) {
    match v {
        Cow::Borrowed(Value::Array(items)) => {
            for i in items.iter().filter(|i| !i.is_null()) {
                out.push(Item {
                    v: Cow::Borrowed(i),
                    kind: kind.clone(),
                });
            }
        }
        Cow::Owned(Value::Array(items)) => {
            for i in items.into_iter().filter(|i| !i.is_null()) {
                out.push(Item {
                    v: Cow::Owned(i),
                    kind: kind.clone(),
                });
            }
        }
        Cow::Borrowed(Value::Null) | Cow::Owned(Value::Null) => {}
        v => out.push(Item {
            v,
            kind: kind.clone(),
        }),
    }
}

fn child<'a>(item: &Item<'a>, key: &str) -> Option<Cow<'a, Value>> {
    match &item.v {
        Cow::Borrowed(v) => v.get(key).map(Cow::Borrowed),
        Cow::Owned(v) => v.get(key).cloned().map(Cow::Owned),
    }
}

fn member<'a>(focus: &[Item<'a>], name: &str, out: &mut Coll<'a>) {
    for item in focus {
        let Some(obj) = item.v.as_object() else {
            continue;
        };
        if starts_upper(name)
            && let Some(Value::String(rt)) = obj.get("resourceType")
        {
            if rt == name || name == "Resource" || name == "DomainResource" {
                out.push(item.clone());
            }
            continue;
        }
        if obj.contains_key(name) {
            if let Some(v) = child(item, name) {
                push_value(out, v, &Kind::Plain);
            }
            continue;
        }
        // Choice element: name + TypeSuffix.
        let found = obj.keys().find_map(|k| {
            let suffix = k.strip_prefix(name)?;
            choice_type_name(suffix).map(|t| (k.clone(), t))
        });
        if let Some((key, ty)) = found
            && let Some(v) = child(item, &key)
        {
            push_value(out, v, &Kind::Typed(ty));
        }
    }
}

fn eval<'a>(node: &Node, focus: &[Item<'a>], env: &Env<'_, 'a>) -> Result<Coll<'a>, FhirError> {
    env.charge(1 + focus.len())?;
    let out = eval_node(node, focus, env)?;
    env.charge(out.len())?;
    Ok(out)
}

fn eval_node<'a>(
    node: &Node,
    focus: &[Item<'a>],
    env: &Env<'_, 'a>,
) -> Result<Coll<'a>, FhirError> {
    match node {
        Node::Empty => Ok(Vec::new()),
        Node::Literal(v, ty) => Ok(vec![Item {
            v: Cow::Owned(v.clone()),
            kind: ty.map_or(Kind::Plain, |t| Kind::Typed(t.into())),
        }]),
        Node::This => Ok(env.this.to_vec()),
        Node::Var(name) => var(name, env.ctx),
        Node::Ident(name) => {
            let mut out = Vec::new();
            member(focus, name, &mut out);
            Ok(out)
        }
        Node::Member(target, name) => {
            let t = eval(target, focus, env)?;
            let mut out = Vec::new();
            member(&t, name, &mut out);
            Ok(out)
        }
        Node::Index(target, idx) => {
            let t = eval(target, focus, env)?;
            let i = eval(idx, env.this, env)?;
            let n = match i.as_slice() {
                [] => return Ok(Vec::new()),
                [one] => one.v.as_u64().ok_or_else(|| {
                    FhirError::FhirPath("indexer must be a non-negative integer".into())
                })?,
                _ => {
                    return Err(FhirError::FhirPath(
                        "indexer must be a single integer".into(),
                    ));
                }
            };
            Ok(usize::try_from(n)
                .ok()
                .and_then(|n| t.into_iter().nth(n))
                .into_iter()
                .collect())
        }
        Node::TypeOp(target, op, ty) => {
            let t = eval(target, focus, env)?;
            match op {
                TypeOp::OfType => Ok(t.into_iter().filter(|i| item_is(i, ty)).collect()),
                TypeOp::As => {
                    if t.len() > 1 {
                        // Lenient like most engines on search-parameter expressions: filter.
                        return Ok(t.into_iter().filter(|i| item_is(i, ty)).collect());
                    }
                    Ok(t.into_iter().filter(|i| item_is(i, ty)).collect())
                }
                TypeOp::Is => match t.as_slice() {
                    [] => Ok(Vec::new()),
                    [one] => Ok(Item::boolean(item_is(one, ty))),
                    _ => Err(FhirError::FhirPath(format!(
                        "'is {ty}' needs a single item"
                    ))),
                },
            }
        }
        Node::Call { target, func, args } => {
            let input = match target {
                Some(t) => eval(t, focus, env)?,
                None => focus.to_vec(),
            };
            call(*func, input, args, env)
        }
        Node::Bin(op, l, r) => binary(*op, l, r, focus, env),
        Node::Union(branches) => {
            let mut all = Vec::new();
            for b in branches {
                all.extend(eval(b, focus, env)?);
            }
            distinct(all, env)
        }
    }
}

fn var<'a>(name: &str, ctx: &Context<'a>) -> Result<Coll<'a>, FhirError> {
    let with_pct = format!("%{name}");
    if let Some(v) = ctx
        .variables
        .get(name)
        .or_else(|| ctx.variables.get(&with_pct))
    {
        return Ok(v.map(Item::borrowed).into_iter().collect());
    }
    match name {
        "resource" | "rootResource" | "context" => {
            Ok(ctx.resource.map(Item::borrowed).into_iter().collect())
        }
        "ucum" => Ok(vec![Item::owned(Value::String(
            "http://unitsofmeasure.org".into(),
        ))]),
        "sct" => Ok(vec![Item::owned(Value::String(
            "http://snomed.info/sct".into(),
        ))]),
        "loinc" => Ok(vec![Item::owned(Value::String("http://loinc.org".into()))]),
        _ => Err(FhirError::FhirPath(format!("undefined variable %{name}"))),
    }
}

fn to_bool(c: &[Item]) -> Result<Option<bool>, FhirError> {
    match c {
        [] => Ok(None),
        [one] => Ok(Some(one.v.as_bool().unwrap_or(true))),
        _ => Err(FhirError::FhirPath(format!(
            "expected a single boolean, got a collection of {}",
            c.len()
        ))),
    }
}

fn single_str<'c>(c: &'c [Item], what: &str) -> Result<Option<&'c str>, FhirError> {
    match c {
        [] => Ok(None),
        [one] => match one.v.as_str() {
            Some(s) => Ok(Some(s)),
            None => Err(FhirError::FhirPath(format!("{what} expects a string"))),
        },
        _ => Err(FhirError::FhirPath(format!("{what} expects a single item"))),
    }
}

fn call<'a>(
    func: Func,
    input: Coll<'a>,
    args: &[Node],
    env: &Env<'_, 'a>,
) -> Result<Coll<'a>, FhirError> {
    // Arguments that are not per-item lambdas are evaluated against the enclosing $this.
    let arg = |i: usize| -> Result<Coll<'a>, FhirError> {
        match args.get(i) {
            Some(a) => eval(a, env.this, env),
            None => Ok(Vec::new()),
        }
    };
    let per_item = |item: &Item<'a>, node: &Node| -> Result<Coll<'a>, FhirError> {
        let one = [item.clone()];
        let sub = Env {
            ctx: env.ctx,
            this: &one,
            steps: env.steps,
        };
        eval(node, &one, &sub)
    };
    Ok(match func {
        Func::Where | Func::Exists if !args.is_empty() => {
            let mut out = Vec::new();
            for item in input {
                if to_bool(&per_item(&item, &args[0])?)? == Some(true) {
                    out.push(item);
                }
            }
            if func == Func::Exists {
                Item::boolean(!out.is_empty())
            } else {
                out
            }
        }
        Func::Where | Func::Exists => Item::boolean(!input.is_empty()),
        Func::Select => {
            let mut out = Vec::new();
            for item in &input {
                out.extend(per_item(item, &args[0])?);
            }
            out
        }
        Func::All => {
            let mut all = true;
            for item in &input {
                if to_bool(&per_item(item, &args[0])?)? != Some(true) {
                    all = false;
                    break;
                }
            }
            Item::boolean(all)
        }
        Func::Empty => Item::boolean(input.is_empty()),
        Func::First => input.into_iter().take(1).collect(),
        Func::Last => input.into_iter().last().into_iter().collect(),
        Func::Tail => input.into_iter().skip(1).collect(),
        Func::Single => match input.len() {
            0 | 1 => input,
            n => {
                return Err(FhirError::FhirPath(format!(
                    "single() on a collection of {n}"
                )));
            }
        },
        Func::Count => vec![Item::owned(Value::from(input.len()))],
        Func::Not => match to_bool(&input)? {
            None => Vec::new(),
            Some(b) => Item::boolean(!b),
        },
        Func::Distinct => distinct(input, env)?,
        Func::HasValue => Item::boolean(
            matches!(input.as_slice(), [one] if !one.v.is_object() && !one.v.is_array()),
        ),
        Func::Resolve => input.into_iter().map(|i| resolve(i, env.ctx)).collect(),
        Func::StartsWith | Func::EndsWith | Func::StrContains => {
            let Some(s) = single_str(&input, "string function")? else {
                return Ok(Vec::new());
            };
            let a = arg(0)?;
            let Some(p) = single_str(&a, "string function argument")? else {
                return Ok(Vec::new());
            };
            Item::boolean(match func {
                Func::StartsWith => s.starts_with(p),
                Func::EndsWith => s.ends_with(p),
                _ => s.contains(p),
            })
        }
        Func::Lower | Func::Upper | Func::Length => {
            let Some(s) = single_str(&input, "string function")? else {
                return Ok(Vec::new());
            };
            vec![Item::owned(match func {
                Func::Lower => Value::String(s.to_lowercase()),
                Func::Upper => Value::String(s.to_uppercase()),
                _ => Value::from(s.chars().count()),
            })]
        }
        Func::Union => {
            let mut all = input;
            all.extend(arg(0)?);
            distinct(all, env)?
        }
        Func::Iif => {
            let cond = match args.first() {
                Some(c) => to_bool(&eval(c, &input, env)?)?,
                None => None,
            };
            let branch = if cond == Some(true) {
                args.get(1)
            } else {
                args.get(2)
            };
            match branch {
                Some(b) => eval(b, &input, env)?,
                None => Vec::new(),
            }
        }
        Func::Extension => {
            let a = arg(0)?;
            let Some(url) = single_str(&a, "extension()")? else {
                return Ok(Vec::new());
            };
            let url = url.to_string();
            let mut exts = Vec::new();
            member(&input, "extension", &mut exts);
            exts.into_iter()
                .filter(|e| e.v.get("url").and_then(Value::as_str) == Some(url.as_str()))
                .collect()
        }
    })
}

/// Removes duplicates (pairwise comparison, so it is charged the square of the input's size).
fn distinct<'a>(items: Coll<'a>, env: &Env<'_, 'a>) -> Result<Coll<'a>, FhirError> {
    env.charge(items.len().saturating_mul(items.len()))?;
    let mut out: Coll = Vec::with_capacity(items.len());
    for i in items {
        if !out.iter().any(|o| values_equal(&o.v, &i.v) == Some(true)) {
            out.push(i);
        }
    }
    Ok(out)
}

fn resolve<'a>(item: Item<'a>, ctx: &Context<'a>) -> Item<'a> {
    let refstr = match item.v.as_ref() {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => o.get("reference").and_then(Value::as_str),
        _ => None,
    };
    let mut ty = None;
    if let Some(r) = refstr {
        let parsed = crate::reference::parse(r);
        if parsed.is_contained() {
            ty = ctx
                .resource
                .and_then(|res| res.get("contained"))
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("id").and_then(Value::as_str) == parsed.id.as_deref())
                })
                .and_then(|c| c.get("resourceType"))
                .and_then(Value::as_str)
                .map(String::from);
        } else {
            ty = parsed.resource_type;
        }
    }
    if ty.is_none() {
        ty = item.v.get("type").and_then(Value::as_str).map(String::from);
    }
    Item {
        v: item.v,
        kind: Kind::Resolved(ty),
    }
}

fn strip_ns(t: &str) -> &str {
    t.strip_prefix("FHIR.")
        .or_else(|| t.strip_prefix("System."))
        .unwrap_or(t)
}

/// Is type `actual` (FHIR spelling) the type `wanted` or a specialisation of it?
fn type_conforms(actual: &str, wanted: &str) -> bool {
    if actual == wanted || actual.eq_ignore_ascii_case(wanted) {
        return true;
    }
    let stringish = [
        "code",
        "id",
        "markdown",
        "uri",
        "url",
        "canonical",
        "oid",
        "uuid",
        "base64Binary",
    ];
    match wanted.to_ascii_lowercase().as_str() {
        "string" => stringish.contains(&actual),
        "uri" => ["url", "canonical", "oid", "uuid"].contains(&actual),
        "integer" => ["positiveInt", "unsignedInt"].contains(&actual),
        "quantity" => ["Age", "Count", "Distance", "Duration", "Money"].contains(&actual),
        "datetime" => actual == "instant",
        _ => false,
    }
}

fn keys_within(o: &Map<String, Value>, allowed: &[&str]) -> bool {
    o.keys()
        .all(|k| k.starts_with('_') || allowed.contains(&k.as_str()))
}

fn item_is(item: &Item, wanted: &str) -> bool {
    let wanted = strip_ns(wanted);
    let any_resource = wanted == "Resource" || wanted == "DomainResource";
    match &item.kind {
        Kind::Resolved(Some(t)) => t == wanted || any_resource,
        Kind::Resolved(None) => false,
        Kind::Typed(t) => type_conforms(t, wanted),
        Kind::Plain => match item.v.as_ref() {
            Value::Bool(_) => wanted.eq_ignore_ascii_case("boolean"),
            Value::Number(n) => {
                let integral = !n.to_string().contains(['.', 'e', 'E']);
                wanted.eq_ignore_ascii_case("decimal")
                    || (integral
                        && (type_conforms("integer", wanted)
                            || wanted == "positiveInt"
                            || wanted == "unsignedInt"))
            }
            Value::String(s) => match wanted {
                "date" => {
                    parse_range(s).is_some_and(|(_, p)| p <= Precision::Day && !s.contains('T'))
                }
                "dateTime" | "DateTime" => parse_range(s).is_some(),
                "instant" => parse_range(s).is_some_and(|(_, p)| p >= Precision::Second),
                "boolean" | "Boolean" | "integer" | "Integer" | "decimal" | "Decimal" => false,
                w => starts_lower_or_system(w),
            },
            Value::Object(o) => {
                if let Some(Value::String(rt)) = o.get("resourceType") {
                    return rt == wanted || any_resource;
                }
                let shape: &[&str] = match wanted {
                    "Reference" => &[
                        "reference",
                        "type",
                        "identifier",
                        "display",
                        "id",
                        "extension",
                    ],
                    "CodeableConcept" => &["coding", "text", "id", "extension"],
                    "Coding" => &[
                        "system",
                        "version",
                        "code",
                        "display",
                        "userSelected",
                        "id",
                        "extension",
                    ],
                    "Period" => &["start", "end", "id", "extension"],
                    "Identifier" => &[
                        "use",
                        "type",
                        "system",
                        "value",
                        "period",
                        "assigner",
                        "id",
                        "extension",
                    ],
                    "Quantity" => &[
                        "value",
                        "comparator",
                        "unit",
                        "system",
                        "code",
                        "id",
                        "extension",
                    ],
                    "CodeableReference" => &["concept", "reference", "id", "extension"],
                    _ => return false,
                };
                keys_within(o, shape)
            }
            _ => false,
        },
    }
}

fn starts_lower_or_system(w: &str) -> bool {
    PRIMITIVES.contains(&w) || w == "String"
}

/// FHIRPath `=` on two single items: `None` when the result is empty (dates of different
/// precision).
fn values_equal(a: &Value, b: &Value) -> Option<bool> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Some(num_eq(x, y)),
        (Value::String(x), Value::String(y)) => {
            if x == y {
                return Some(true);
            }
            if let (Some((rx, px)), Some((ry, py))) = (date_like(x), date_like(y)) {
                return if px == py { Some(rx == ry) } else { None };
            }
            Some(false)
        }
        (Value::Object(x), Value::Object(y)) => Some(
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w) == Some(true))),
        ),
        (Value::Array(x), Value::Array(y)) => Some(
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(v, w)| values_equal(v, w) == Some(true)),
        ),
        _ => Some(a == b),
    }
}

fn date_like(s: &str) -> Option<(crate::date::DateRange, Precision)> {
    if s.len() >= 4 && s.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
        parse_range(s)
    } else {
        None
    }
}

fn num_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    match (x.as_f64(), y.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => x == y,
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn values_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => normalize_ws(x) == normalize_ws(y),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equivalent(v, w)))
        }
        _ => values_equal(a, b) == Some(true),
    }
}

fn compare(a: &Value, b: &Value) -> Result<Option<std::cmp::Ordering>, FhirError> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => Ok(x.partial_cmp(&y)),
            _ => Ok(None),
        },
        (Value::String(x), Value::String(y)) => {
            if let (Some((rx, px)), Some((ry, py))) = (date_like(x), date_like(y)) {
                if px == py || rx.end <= ry.start || ry.end <= rx.start {
                    return Ok(Some(rx.start.cmp(&ry.start)));
                }
                return Ok(None);
            }
            Ok(Some(x.cmp(y)))
        }
        _ => Err(FhirError::FhirPath(format!("cannot compare {a} with {b}"))),
    }
}

fn binary<'a>(
    op: Op,
    l: &Node,
    r: &Node,
    focus: &[Item<'a>],
    env: &Env<'_, 'a>,
) -> Result<Coll<'a>, FhirError> {
    let lv = eval(l, focus, env)?;
    // Short-circuit boolean operators where the spec allows it.
    match op {
        Op::And if to_bool(&lv)? == Some(false) => return Ok(Item::boolean(false)),
        Op::Or if to_bool(&lv)? == Some(true) => return Ok(Item::boolean(true)),
        Op::Implies if to_bool(&lv)? == Some(false) => return Ok(Item::boolean(true)),
        _ => {}
    }
    let rv = eval(r, focus, env)?;
    Ok(match op {
        Op::And | Op::Or | Op::Xor | Op::Implies => {
            let (a, b) = (to_bool(&lv)?, to_bool(&rv)?);
            let res = match op {
                Op::And => match (a, b) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                Op::Or => match (a, b) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                Op::Xor => match (a, b) {
                    (Some(x), Some(y)) => Some(x != y),
                    _ => None,
                },
                _ => match (a, b) {
                    (Some(false), _) | (_, Some(true)) => Some(true),
                    (Some(true), Some(false)) => Some(false),
                    _ => None,
                },
            };
            res.map(Item::boolean).unwrap_or_default()
        }
        Op::Eq | Op::Ne => {
            if lv.is_empty() || rv.is_empty() {
                return Ok(Vec::new());
            }
            let eq = if lv.len() != rv.len() {
                Some(false)
            } else {
                let mut acc = Some(true);
                for (a, b) in lv.iter().zip(&rv) {
                    match values_equal(&a.v, &b.v) {
                        Some(true) => {}
                        Some(false) => {
                            acc = Some(false);
                            break;
                        }
                        None => acc = None,
                    }
                }
                acc
            };
            match eq {
                None => Vec::new(),
                Some(e) => Item::boolean(if op == Op::Eq { e } else { !e }),
            }
        }
        Op::Equiv | Op::NotEquiv => {
            env.charge(lv.len().saturating_mul(rv.len()))?;
            let eq = lv.len() == rv.len()
                && lv
                    .iter()
                    .all(|a| rv.iter().any(|b| values_equivalent(&a.v, &b.v)));
            Item::boolean(if op == Op::Equiv { eq } else { !eq })
        }
        Op::Lt | Op::Gt | Op::Le | Op::Ge => {
            let (a, b) = match (lv.as_slice(), rv.as_slice()) {
                ([], _) | (_, []) => return Ok(Vec::new()),
                ([a], [b]) => (a, b),
                _ => return Err(FhirError::FhirPath("comparison needs single items".into())),
            };
            match compare(&a.v, &b.v)? {
                None => Vec::new(),
                Some(o) => Item::boolean(match op {
                    Op::Lt => o.is_lt(),
                    Op::Gt => o.is_gt(),
                    Op::Le => o.is_le(),
                    _ => o.is_ge(),
                }),
            }
        }
        Op::In | Op::Contains => {
            let (needle, hay) = if op == Op::In { (lv, rv) } else { (rv, lv) };
            match needle.as_slice() {
                [] => Vec::new(),
                [n] => Item::boolean(hay.iter().any(|h| values_equal(&n.v, &h.v) == Some(true))),
                _ => return Err(FhirError::FhirPath("membership needs a single item".into())),
            }
        }
    })
}

#[cfg(test)]
mod tests;
