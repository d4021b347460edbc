//! A YAML value together with where it sits (`services.web.ports[0]`), and the scalar and
//! collection readers the compose syntaxes share: strings, booleans, numbers, byte sizes,
//! durations, lists and `KEY=value` dictionaries.
//!
//! It knows the Compose Specification's value conventions but no key of it: which key holds what
//! belongs to `compose` and `compose::service`. Values arrive interpolated, so every typed reader
//! also accepts the string form (`"true"`, `"80"`), as Compose casts after interpolating.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use yaml_serde::Value;

use super::Error;

/// A value in the compose file and its path, for error messages.
#[derive(Clone)]
pub struct Node<'a> {
    pub file: &'a Path,
    pub at: String,
    pub value: &'a Value,
}

impl<'a> Node<'a> {
    pub fn new(file: &'a Path, at: impl Into<String>, value: &'a Value) -> Self {
        Node {
            file,
            at: at.into(),
            value,
        }
    }

    pub fn invalid(&self, message: impl Display) -> Error {
        Error::Invalid {
            file: self.file.to_path_buf(),
            at: self.at.clone(),
            message: message.to_string(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.untagged(), Value::Null)
    }

    /// A mapping's entries, keys as strings, in file order.
    pub fn entries(&self) -> Result<Vec<(String, Node<'a>)>, Error> {
        let Value::Mapping(mapping) = self.untagged() else {
            return Err(self.invalid("must be a mapping"));
        };
        mapping
            .iter()
            .map(|(key, value)| {
                let key = scalar(key).ok_or_else(|| self.invalid("keys must be strings"))?;
                let child = Node::new(self.file, self.child_at(&key), value);
                Ok((key, child))
            })
            .collect()
    }

    /// The entry under `key` of a mapping, if present.
    pub fn get(&self, key: &str) -> Option<Node<'a>> {
        let Value::Mapping(mapping) = self.untagged() else {
            return None;
        };
        let value = mapping.get(key)?;
        Some(Node::new(self.file, self.child_at(key), value))
    }

    pub fn items(&self) -> Result<Vec<Node<'a>>, Error> {
        let Value::Sequence(sequence) = self.untagged() else {
            return Err(self.invalid("must be a list"));
        };
        Ok(sequence
            .iter()
            .enumerate()
            .map(|(index, value)| Node::new(self.file, format!("{}[{index}]", self.at), value))
            .collect())
    }

    /// A string, number or boolean, as a string.
    pub fn string(&self) -> Result<String, Error> {
        scalar(self.untagged()).ok_or_else(|| self.invalid("must be a string"))
    }

    pub fn bool(&self) -> Result<bool, Error> {
        match self.untagged() {
            Value::Bool(value) => Ok(*value),
            // YAML 1.1 spellings, which Compose's cast after interpolation accepts too.
            Value::String(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Ok(true),
                "false" | "no" | "n" | "off" => Ok(false),
                _ => Err(self.invalid(format!("{text:?} is not a boolean"))),
            },
            _ => Err(self.invalid("must be a boolean")),
        }
    }

    pub fn integer(&self) -> Result<i64, Error> {
        let text = self.string()?;
        text.trim()
            .parse()
            .map_err(|_| self.invalid(format!("{text:?} is not an integer")))
    }

    pub fn float(&self) -> Result<f64, Error> {
        let text = self.string()?;
        text.trim()
            .parse()
            .map_err(|_| self.invalid(format!("{text:?} is not a number")))
    }

    /// A list of strings.
    pub fn strings(&self) -> Result<Vec<String>, Error> {
        self.items()?.iter().map(Node::string).collect()
    }

    /// One string or a list of them, as `dns:` and `tmpfs:` take.
    pub fn string_or_strings(&self) -> Result<Vec<String>, Error> {
        match self.untagged() {
            Value::Sequence(_) => self.strings(),
            _ => Ok(vec![self.string()?]),
        }
    }

    /// A dictionary written as a mapping (`KEY: value`) or a list (`KEY=value`, or a bare `KEY`).
    /// A bare key or a null value gives `None`: `environment` looks those up, `labels` takes "".
    pub fn dictionary(&self) -> Result<Vec<(String, Option<String>)>, Error> {
        match self.untagged() {
            Value::Sequence(_) => self
                .items()?
                .iter()
                .map(|item| {
                    let text = item.string()?;
                    Ok(match text.split_once('=') {
                        Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
                        None => (text, None),
                    })
                })
                .collect(),
            _ => self
                .entries()?
                .into_iter()
                .map(|(key, value)| {
                    let value = if value.is_null() {
                        None
                    } else {
                        Some(value.string()?)
                    };
                    Ok((key, value))
                })
                .collect(),
        }
    }

    /// A byte size: an integer, or a string such as `512m`, `1g` or `1.5gb`. Units are binary, as
    /// in Compose's `RAMInBytes` (docker/go-units).
    pub fn bytes(&self) -> Result<i64, Error> {
        let text = self.string()?;
        parse_bytes(&text).ok_or_else(|| self.invalid(format!("{text:?} is not a byte size")))
    }

    /// A Go-style duration such as `10s`, `1m30s`, `1.5s` or `500ms`, as the Compose
    /// Specification's "Specifying durations" section defines.
    pub fn duration(&self) -> Result<Duration, Error> {
        let text = self.string()?;
        parse_duration(&text).ok_or_else(|| self.invalid(format!("{text:?} is not a duration")))
    }

    fn child_at(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    fn untagged(&self) -> &'a Value {
        let mut value = self.value;
        while let Value::Tagged(tagged) = value {
            value = &tagged.value;
        }
        value
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(value) => Some(value.to_string()),
        _ => None,
    }
}

fn parse_bytes(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let text = text.strip_suffix('b').unwrap_or(&text);
    let text = text.strip_suffix('i').unwrap_or(text);
    let (number, exponent) = match text.char_indices().last()? {
        (index, 'k') => (&text[..index], 1),
        (index, 'm') => (&text[..index], 2),
        (index, 'g') => (&text[..index], 3),
        (index, 't') => (&text[..index], 4),
        (index, 'p') => (&text[..index], 5),
        _ => (text, 0),
    };
    let number: f64 = number.trim().parse().ok()?;
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    // Truncation, as go-units does with int64(size * multiplier).
    Some((number * 1024f64.powi(exponent)) as i64)
}

fn parse_duration(text: &str) -> Option<Duration> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|character: char| !(character.is_ascii_digit() || character == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        // Longest unit first, so that "ms" is not read as "m" followed by "s".
        let (unit, factor) = UNITS
            .iter()
            .filter(|(unit, _)| rest.starts_with(unit))
            .max_by_key(|(unit, _)| unit.len())?;
        seconds += number * factor;
        rest = &rest[unit.len()..];
    }
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn byte_sizes_are_binary() {
        let sizes = [
            "512", "512m", "1g", "1.5gb", "64k", "2MiB", "1 g", "x", "-1m",
        ]
        .map(|text| format!("{text}={:?}", parse_bytes(text)));
        expect![[r#"
            512=Some(512)
            512m=Some(536870912)
            1g=Some(1073741824)
            1.5gb=Some(1610612736)
            64k=Some(65536)
            2MiB=Some(2097152)
            1 g=Some(1073741824)
            x=None
            -1m=None"#]]
        .assert_eq(&sizes.join("\n"));
    }

    #[test]
    fn durations_follow_go() {
        let durations = ["10s", "1m30s", "500ms", "1.5s", "1h", "0", "10", "5x", ""]
            .map(|text| format!("{text}={:?}", parse_duration(text)));
        expect![[r#"
            10s=Some(10s)
            1m30s=Some(90s)
            500ms=Some(500ms)
            1.5s=Some(1.5s)
            1h=Some(3600s)
            0=Some(0ns)
            10=None
            5x=None
            =None"#]]
        .assert_eq(&durations.join("\n"));
    }
}
