//! Scanning the expression's pieces (whitespace, identifiers, numbers, string literals) over
//! bytes with their offsets, for the recursive-descent parser in `parse`. The token rules are
//! go-bexpr's: identifiers are `[a-zA-Z][a-zA-Z0-9_/]*`, numbers `-?(0|[1-9][0-9]*)(.[0-9]+)?`
//! followed by whitespace, `)` or the end, strings `"..."` (Go escapes, ending at the first
//! `"`) or `` `...` `` (raw, carriage returns dropped, as Go's `strconv.Unquote`).

use super::error::{FilterError, Position};

/// A read position over the expression.
pub(super) struct Cursor<'a> {
    pub(super) input: &'a str,
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(input: &'a str) -> Self {
        Self { input, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.input.as_bytes()
    }

    /// The byte at the read position.
    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    pub(super) fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes().get(self.pos + ahead).copied()
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// Skips `[ \t\r\n]*`; true when it skipped anything.
    pub(super) fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Consumes `s` if the input continues with it.
    pub(super) fn eat(&mut self, s: &str) -> bool {
        if self.input[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// A syntax error at byte `offset`.
    pub(super) fn error_at(&self, offset: usize, message: impl Into<String>) -> FilterError {
        FilterError::Syntax {
            at: Position::of(self.input, offset),
            message: message.into(),
        }
    }

    /// A syntax error at the read position saying what was found and what was expected.
    pub(super) fn expected(&self, what: &str) -> FilterError {
        let found = match self.input[self.pos..].chars().next() {
            None => "end of input".to_string(),
            Some(c) => format!("{c:?}"),
        };
        self.error_at(
            self.pos,
            format!("no match found at {found}, expected: {what}"),
        )
    }

    /// An identifier (`[a-zA-Z][a-zA-Z0-9_/]*`), if one starts here.
    pub(super) fn identifier(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if !self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'/')
        {
            self.pos += 1;
        }
        Some(&self.input[start..self.pos])
    }

    /// The identifier at the read position without consuming it.
    pub(super) fn peek_identifier(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let id = self.identifier();
        self.pos = start;
        id
    }

    /// Consumes keyword `kw` when it is the whole identifier here.
    pub(super) fn keyword(&mut self, kw: &str) -> bool {
        if self.peek_identifier() == Some(kw) {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    /// `-?(0|[1-9][0-9]*)(.[0-9]+)?`, which must be followed by whitespace, `)` or the end.
    /// `Ok(None)` when no number starts here.
    pub(super) fn number(&mut self) -> Result<Option<&'a str>, FilterError> {
        let start = self.pos;
        let digits = |c: &mut Self| {
            let s = c.pos;
            while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                c.pos += 1;
            }
            c.pos - s
        };
        self.eat("-");
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => {
                self.pos = start;
                return Ok(None);
            }
        }
        if self.peek() == Some(b'.') && self.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
            digits(self);
        }
        if !matches!(
            self.peek(),
            None | Some(b' ' | b'\t' | b'\r' | b'\n' | b')')
        ) {
            return Err(self.error_at(start, "rule \"number\": Invalid number literal"));
        }
        Ok(Some(&self.input[start..self.pos]))
    }

    /// A string literal (`"..."` or `` `...` ``) unquoted, if one starts here.
    pub(super) fn string(&mut self) -> Result<Option<String>, FilterError> {
        let start = self.pos;
        let Some(quote @ (b'"' | b'`')) = self.peek() else {
            return Ok(None);
        };
        let body_start = start + 1;
        let Some(len) = self.input[body_start..].find(quote as char) else {
            return Err(self.error_at(start, "rule \"string\": Unterminated string literal"));
        };
        let body = &self.input[body_start..body_start + len];
        self.pos = body_start + len + 1;
        let text = if quote == b'`' {
            body.replace('\r', "")
        } else {
            unquote(body).map_err(|reason| {
                self.error_at(start, format!("rule \"string\": invalid syntax: {reason}"))
            })?
        };
        Ok(Some(text))
    }
}

/// The body of a Go double-quoted string literal with its escapes resolved.
fn unquote(body: &str) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut bytes: Vec<u8> = Vec::new();
    let mut chars = body.chars();
    // Bytes from `\x`/octal escapes are gathered, then must form UTF-8 with what follows.
    let flush = |bytes: &mut Vec<u8>, out: &mut String| -> Result<(), String> {
        if !bytes.is_empty() {
            let s = String::from_utf8(std::mem::take(bytes))
                .map_err(|_| "escaped bytes are not UTF-8".to_string())?;
            out.push_str(&s);
        }
        Ok(())
    };
    while let Some(c) = chars.next() {
        if c == '\n' {
            return Err("a newline inside a double-quoted string".into());
        }
        if c != '\\' {
            flush(&mut bytes, &mut out)?;
            out.push(c);
            continue;
        }
        let e = chars.next().ok_or("a trailing backslash")?;
        let simple = match e {
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\x0b'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            _ => None,
        };
        if let Some(s) = simple {
            flush(&mut bytes, &mut out)?;
            out.push(s);
            continue;
        }
        let mut take = |n: usize, radix: u32| -> Result<u32, String> {
            let digits: String = chars.by_ref().take(n).collect();
            if digits.chars().count() != n {
                return Err(format!("escape \\{e} needs {n} digits"));
            }
            u32::from_str_radix(&digits, radix).map_err(|_| format!("bad digits in \\{e}{digits}"))
        };
        match e {
            'x' => bytes.push(u8::try_from(take(2, 16)?).map_err(|_| "bad \\x")?),
            '0'..='7' => {
                let rest = take(2, 8)?;
                let v = e.to_digit(8).unwrap_or(0) * 64 + rest;
                bytes.push(u8::try_from(v).map_err(|_| "octal escape above \\377")?);
            }
            'u' | 'U' => {
                let v = take(if e == 'u' { 4 } else { 8 }, 16)?;
                flush(&mut bytes, &mut out)?;
                out.push(char::from_u32(v).ok_or("escape is not a Unicode scalar value")?);
            }
            other => return Err(format!("unknown escape \\{other}")),
        }
    }
    flush(&mut bytes, &mut out)?;
    Ok(out)
}
