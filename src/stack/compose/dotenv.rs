//! The dotenv syntax of `.env` and `env_file` files: `KEY=value`, `export KEY=value`, quotes,
//! comments, escapes and interpolation of unquoted and double-quoted values.
//!
//! Pure: it parses text it is given and looks variables up through the caller. Reading the file,
//! deciding precedence and recording lookups belong to `compose`. Rules follow "Syntax for
//! environment files" (<https://docs.docker.com/compose/env-file/>).

use super::super::interpolate::{self, interpolate};

/// Why a dotenv file could not be parsed; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Syntax {
        line: usize,
        message: String,
    },
    MissingVariable {
        line: usize,
        name: String,
        message: String,
    },
}

/// Parses dotenv `text` into `(key, value)` pairs in file order.
///
/// A value may use variables defined earlier in the same text, else those `lookup` finds, as
/// Compose's dotenv parser does. A bare `KEY` line takes its value from `lookup` and is dropped
/// when `lookup` finds none.
pub fn parse(
    text: &str,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, Error> {
    let mut parser = Parser {
        rest: text,
        line: 1,
    };
    let mut entries: Vec<(String, String)> = Vec::new();
    while let Some(key) = parser.next_key()? {
        let value = match parser.value()? {
            Some(Value::Literal(value)) => Some(value),
            Some(Value::Interpolated(raw)) => Some(expand(&raw, &entries, lookup, parser.line)?),
            None => lookup(&key),
        };
        if let Some(value) = value {
            entries.retain(|(existing, _)| *existing != key);
            entries.push((key, value));
        }
    }
    Ok(entries)
}

/// A value as written: single-quoted values are taken literally, others are interpolated.
enum Value {
    Literal(String),
    Interpolated(String),
}

struct Parser<'a> {
    rest: &'a str,
    line: usize,
}

impl Parser<'_> {
    /// Skips blank lines and comments and reads the next key, without `export `.
    fn next_key(&mut self) -> Result<Option<String>, Error> {
        loop {
            let trimmed = self.rest.trim_start_matches([' ', '\t', '\r']);
            if let Some(after) = trimmed.strip_prefix('\n') {
                self.line += 1;
                self.rest = after;
            } else if trimmed.starts_with('#') {
                self.rest = trimmed.find('\n').map_or("", |end| &trimmed[end..]);
            } else if trimmed.is_empty() {
                return Ok(None);
            } else {
                self.rest = trimmed;
                break;
            }
        }
        let end = self.rest.find(['=', '\n']).unwrap_or(self.rest.len());
        let key = self.rest[..end].trim();
        let key = key.strip_prefix("export ").map_or(key, str::trim_start);
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(self.syntax(format!("invalid variable name {key:?}")));
        }
        let key = key.to_owned();
        self.rest = &self.rest[end..];
        Ok(Some(key))
    }

    /// Reads what follows the key: `None` for a bare key, else the value.
    fn value(&mut self) -> Result<Option<Value>, Error> {
        let Some(after) = self.rest.strip_prefix('=') else {
            return Ok(None);
        };
        let after = after.trim_start_matches([' ', '\t']);
        let value = match after.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                let (value, rest) = self.quoted(&after[1..], quote)?;
                self.rest = rest;
                self.expect_end_of_line()?;
                value
            }
            _ => {
                let end = after.find('\n').unwrap_or(after.len());
                self.rest = &after[end..];
                Value::Interpolated(strip_inline_comment(&after[..end]).to_owned())
            }
        };
        Ok(Some(value))
    }

    /// Reads a quoted value up to its closing quote, which may be on a later line.
    fn quoted<'t>(&mut self, text: &'t str, quote: char) -> Result<(Value, &'t str), Error> {
        let mut value = String::new();
        let mut characters = text.char_indices();
        while let Some((index, character)) = characters.next() {
            match character {
                '\\' => {
                    let escaped = characters.next().map(|(_, escaped)| escaped);
                    value.push_str(&unescape(quote, escaped));
                }
                '\n' => {
                    self.line += 1;
                    value.push('\n');
                }
                closing if closing == quote => {
                    let rest = &text[index + 1..];
                    let value = if quote == '\'' {
                        Value::Literal(value)
                    } else {
                        Value::Interpolated(value)
                    };
                    return Ok((value, rest));
                }
                other => value.push(other),
            }
        }
        Err(self.syntax(format!("missing closing quote {quote}")))
    }

    /// After a closing quote only blanks and a comment may follow on the line.
    fn expect_end_of_line(&mut self) -> Result<(), Error> {
        let end = self.rest.find('\n').unwrap_or(self.rest.len());
        let tail = self.rest[..end].trim();
        if !(tail.is_empty() || tail.starts_with('#')) {
            return Err(self.syntax(format!("unexpected {tail:?} after a quoted value")));
        }
        self.rest = &self.rest[end..];
        Ok(())
    }

    fn syntax(&self, message: String) -> Error {
        Error::Syntax {
            line: self.line,
            message,
        }
    }
}

/// An unquoted value ends at a `#` preceded by a blank: `VAR=VAL # comment`, but `VAL#x` is kept.
fn strip_inline_comment(value: &str) -> &str {
    let end = value
        .match_indices('#')
        .find(|(index, _)| value[..*index].ends_with([' ', '\t']))
        .map_or(value.len(), |(index, _)| index);
    value[..end].trim()
}

/// Double quotes know the shell escapes `\n`, `\r`, `\t`, `\\` and `\"`; single quotes know only
/// `\'`. Any other backslash is kept as written.
fn unescape(quote: char, escaped: Option<char>) -> String {
    match (quote, escaped) {
        ('"', Some('n')) => "\n".to_owned(),
        ('"', Some('r')) => "\r".to_owned(),
        ('"', Some('t')) => "\t".to_owned(),
        ('"', Some(character @ ('\\' | '"'))) | ('\'', Some(character @ '\'')) => {
            character.to_string()
        }
        (_, Some(other)) => format!("\\{other}"),
        (_, None) => "\\".to_owned(),
    }
}

/// Interpolates a value with the entries defined so far, then `lookup`.
fn expand(
    raw: &str,
    entries: &[(String, String)],
    lookup: &mut dyn FnMut(&str) -> Option<String>,
    line: usize,
) -> Result<String, Error> {
    let mut lookup_here = |name: &str| {
        entries
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .or_else(|| lookup(name))
    };
    interpolate(raw, &mut lookup_here).map_err(|error| match error {
        interpolate::Error::Syntax => Error::Syntax {
            line,
            message: format!("invalid interpolation format {raw:?}"),
        },
        interpolate::Error::Missing { name, message } => Error::MissingVariable {
            line,
            name,
            message,
        },
        interpolate::Error::TooDeep => Error::Syntax {
            line,
            message: format!(
                "variables nest deeper than {} levels",
                interpolate::MAX_NESTING
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    /// Parses `text` with only `OUTER=outside` in the environment.
    fn check(text: &str, expected: &Expect) {
        let mut lookup = |name: &str| (name == "OUTER").then(|| "outside".to_owned());
        let actual = match parse(text, &mut lookup) {
            Ok(entries) => entries
                .iter()
                .map(|(key, value)| format!("{key}={value:?}\n"))
                .collect(),
            Err(error) => format!("{error:?}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn plain_export_and_empty() {
        check(
            "A=1\nexport B=two words\nC=\n  D = spaced  \n",
            &expect![[r#"
                A="1"
                B="two words"
                C=""
                D="spaced"
            "#]],
        );
    }

    #[test]
    fn comments() {
        check(
            "# heading\n\nA=x # comment\nB=x#kept\nC=\"v # kept\" # comment\n",
            &expect![[r#"
                A="x"
                B="x#kept"
                C="v # kept"
            "#]],
        );
    }

    #[test]
    fn quotes_and_escapes() {
        check(
            "S='$OUTER\\t\\'q\\''\nD=\"a\\tb \\\"q\\\" $OUTER\"\nM=\"line1\nline2\"\n",
            &expect![[r#"
                S="$OUTER\\t'q'"
                D="a\tb \"q\" outside"
                M="line1\nline2"
            "#]],
        );
    }

    #[test]
    fn interpolation_sees_earlier_entries_then_lookup() {
        check(
            "A=first\nB=${A}-${OUTER}-${NONE:-d}\nBARE_OUTER\nOUTER\nNONE\n",
            &expect![[r#"
                A="first"
                B="first-outside-d"
                OUTER="outside"
            "#]],
        );
    }

    #[test]
    fn errors_name_the_line() {
        check(
            "A=1\nB=\"open\n",
            &expect![[r#"Syntax { line: 3, message: "missing closing quote \"" }"#]],
        );
        check(
            "A=1\nB=${X:?set X}\n",
            &expect![[r#"MissingVariable { line: 2, name: "X", message: "set X" }"#]],
        );
        check(
            "A=1\n\nB='x' y\n",
            &expect![[r#"Syntax { line: 3, message: "unexpected \"y\" after a quoted value" }"#]],
        );
    }
}
