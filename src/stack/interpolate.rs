//! Compose variable interpolation of one string: `$VAR`, `${VAR}`, the `-`, `?` and `+` forms with
//! and without `:`, nesting, and `$$`.
//!
//! Pure: variables come from a lookup the caller passes in, so this module knows nothing of `.env`,
//! the process environment or YAML. Walking a document and recording what was looked up belong to
//! `compose`. Rules follow the Compose Specification, "Interpolation"
//! (<https://docs.docker.com/reference/compose-file/interpolation/>), checked against
//! `docker compose config` 2.40.

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A `${` without its `}`, or a braced expression that is not `NAME` followed by an operator.
    Syntax,
    /// `${NAME?message}` or `${NAME:?message}` found no value.
    Missing { name: String, message: String },
    /// Defaults nested deeper than `MAX_NESTING`: refused rather than recursed into until the
    /// stack overflows (issue 9, "Hostile or careless input").
    TooDeep,
}

/// How deep `${A:-${B:-...}}` may nest. Real files nest two or three levels.
pub const MAX_NESTING: usize = 32;

/// Replaces every variable expression in `text` with its value from `lookup`.
///
/// A `$` that does not start a valid expression (`$1`, `$ `, a trailing `$`) is kept as it is, as
/// Compose keeps it. An unset variable in a plain `$VAR` or `${VAR}` becomes the empty string
/// (Compose warns; we leave warning to the caller, which sees the lookup).
pub fn interpolate(
    text: &str,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<String, Error> {
    expand(text, lookup, 0)
}

fn expand(
    text: &str,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
    depth: usize,
) -> Result<String, Error> {
    if depth > MAX_NESTING {
        return Err(Error::TooDeep);
    }
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        output.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            output.push('$');
            rest = tail;
        } else if let Some(inside) = after.strip_prefix('{') {
            let end = closing_brace(inside).ok_or(Error::Syntax)?;
            output.push_str(&braced(&inside[..end], lookup, depth)?);
            rest = &inside[end + 1..];
        } else {
            let length = name_length(after);
            if length == 0 {
                output.push('$');
            } else {
                output.push_str(&lookup(&after[..length]).unwrap_or_default());
            }
            rest = &after[length..];
        }
    }
    output.push_str(rest);
    Ok(output)
}

/// The operator between a variable's name and its argument inside `${...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    /// `-` and `:-`: a default value.
    Default,
    /// `?` and `:?`: an error message when unset.
    Required,
    /// `+` and `:+`: a replacement when set.
    Alternative,
}

/// Evaluates the inside of `${...}`.
fn braced(
    inside: &str,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
    depth: usize,
) -> Result<String, Error> {
    let length = name_length(inside);
    if length == 0 {
        return Err(Error::Syntax);
    }
    let name = &inside[..length];
    let parsed = operator(&inside[length..])?;
    let value = lookup(name);
    let Some((operator, empty_counts_as_unset, argument)) = parsed else {
        return Ok(value.unwrap_or_default());
    };
    // With a colon, "set" means "set and non-empty" (`${VAR:-default}`); without, only "set".
    let is_set = match &value {
        Some(value) => !(empty_counts_as_unset && value.is_empty()),
        None => false,
    };
    match (operator, is_set) {
        (Operator::Default, true) | (Operator::Required, true) => Ok(value.unwrap_or_default()),
        (Operator::Default, false) | (Operator::Alternative, true) => {
            expand(argument, lookup, depth + 1)
        }
        (Operator::Alternative, false) => Ok(String::new()),
        (Operator::Required, false) => Err(Error::Missing {
            name: name.to_owned(),
            message: expand(argument, lookup, depth + 1)?,
        }),
    }
}

/// Splits what follows the name in `${NAME...}` into operator, colon and argument; `None` when
/// nothing follows.
fn operator(after_name: &str) -> Result<Option<(Operator, bool, &str)>, Error> {
    if after_name.is_empty() {
        return Ok(None);
    }
    let (colon, rest) = match after_name.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, after_name),
    };
    let mut characters = rest.chars();
    let operator = match characters.next() {
        Some('-') => Operator::Default,
        Some('?') => Operator::Required,
        Some('+') => Operator::Alternative,
        _ => return Err(Error::Syntax),
    };
    Ok(Some((operator, colon, characters.as_str())))
}

/// Byte index of the `}` that closes a `${`, counting nested `${...}` in defaults.
fn closing_brace(inside: &str) -> Option<usize> {
    let bytes = inside.as_bytes();
    let mut depth = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'$' if bytes.get(index + 1) == Some(&b'$') => index += 1,
            b'$' if bytes.get(index + 1) == Some(&b'{') => {
                depth += 1;
                index += 1;
            }
            b'}' if depth == 0 => return Some(index),
            b'}' => depth -= 1,
            _ => {}
        }
        index += 1;
    }
    None
}

/// Length in bytes of the variable name at the start of `text`: `[_a-zA-Z][_a-zA-Z0-9]*`.
fn name_length(text: &str) -> usize {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_alphabetic() || *first == b'_' => bytes
            .iter()
            .position(|byte| !(byte.is_ascii_alphanumeric() || *byte == b'_'))
            .unwrap_or(bytes.len()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use expect_test::{Expect, expect};

    use super::*;

    /// Interpolates `text` with `A=alpha`, `EMPTY=` and nothing else set, and shows the result
    /// followed by the names looked up.
    fn check(text: &str, expected: &Expect) {
        let environment = BTreeMap::from([("A", "alpha"), ("EMPTY", "")]);
        let mut looked_up = Vec::new();
        let mut lookup = |name: &str| {
            looked_up.push(name.to_owned());
            environment.get(name).map(|value| value.to_string())
        };
        let result = interpolate(text, &mut lookup);
        expected.assert_eq(&format!("{result:?} {looked_up:?}"));
    }

    #[test]
    fn plain_variables() {
        check("$A", &expect![[r#"Ok("alpha") ["A"]"#]]);
        check("${A}", &expect![[r#"Ok("alpha") ["A"]"#]]);
        check(
            "x${A}y$A-z",
            &expect![[r#"Ok("xalphayalpha-z") ["A", "A"]"#]],
        );
        check(
            "${UNSET}|$UNSET",
            &expect![[r#"Ok("|") ["UNSET", "UNSET"]"#]],
        );
        check("no variables", &expect![[r#"Ok("no variables") []"#]]);
    }

    #[test]
    fn dollar_escapes_and_lone_dollars() {
        check("$$A", &expect![[r#"Ok("$A") []"#]]);
        check("$${A}", &expect![[r#"Ok("${A}") []"#]]);
        check("a$1 $ b$", &expect![[r#"Ok("a$1 $ b$") []"#]]);
    }

    #[test]
    fn defaults() {
        check("${UNSET:-d}", &expect![[r#"Ok("d") ["UNSET"]"#]]);
        check("${EMPTY:-d}", &expect![[r#"Ok("d") ["EMPTY"]"#]]);
        check("${EMPTY-d}", &expect![[r#"Ok("") ["EMPTY"]"#]]);
        check("${UNSET-d}", &expect![[r#"Ok("d") ["UNSET"]"#]]);
        check("${A:-d}", &expect![[r#"Ok("alpha") ["A"]"#]]);
        check("${UNSET:-}}", &expect![[r#"Ok("}") ["UNSET"]"#]]);
        check("${UNSET:-a b:c}", &expect![[r#"Ok("a b:c") ["UNSET"]"#]]);
    }

    #[test]
    fn nested_defaults() {
        check(
            "${UNSET:-${A}}",
            &expect![[r#"Ok("alpha") ["UNSET", "A"]"#]],
        );
        check(
            "${UNSET:-${OTHER:-deep}}!",
            &expect![[r#"Ok("deep!") ["UNSET", "OTHER"]"#]],
        );
        check("${A:-${B}}", &expect![[r#"Ok("alpha") ["A"]"#]]);
    }

    #[test]
    fn required_values() {
        check("${A:?no}", &expect![[r#"Ok("alpha") ["A"]"#]]);
        check("${EMPTY?no}", &expect![[r#"Ok("") ["EMPTY"]"#]]);
        check(
            "${EMPTY:?must be set}",
            &expect![[r#"Err(Missing { name: "EMPTY", message: "must be set" }) ["EMPTY"]"#]],
        );
        check(
            "${UNSET?$A is missing}",
            &expect![[
                r#"Err(Missing { name: "UNSET", message: "alpha is missing" }) ["UNSET", "A"]"#
            ]],
        );
    }

    #[test]
    fn alternatives() {
        check("${A:+yes}", &expect![[r#"Ok("yes") ["A"]"#]]);
        check("${EMPTY:+yes}", &expect![[r#"Ok("") ["EMPTY"]"#]]);
        check("${EMPTY+yes}", &expect![[r#"Ok("yes") ["EMPTY"]"#]]);
        check("${UNSET+yes}", &expect![[r#"Ok("") ["UNSET"]"#]]);
    }

    #[test]
    fn syntax_errors() {
        check("${", &expect!["Err(Syntax) []"]);
        check("${A", &expect!["Err(Syntax) []"]);
        check("${A:-x", &expect!["Err(Syntax) []"]);
        check("${-x}", &expect!["Err(Syntax) []"]);
        check("${A B}", &expect!["Err(Syntax) []"]);
        check("${A:x}", &expect!["Err(Syntax) []"]);
        check("${}", &expect!["Err(Syntax) []"]);
    }
}
