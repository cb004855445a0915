//! Segment conditions compiled once per prepared environment: what Flagsmith's engine re-reads on
//! every request (a regex compiled, a semver and numbers parsed, an `IN` list split, a property
//! path split into member names) is done here once, so that a request only compares.
//!
//! The semantics are those of `flagsmith-flag-engine` 0.7.0 (`engine_eval::segment_evaluator`),
//! operator by operator; [`crate::evaluation::compiled`]'s differential test holds the two
//! together. A condition whose property only the crate's JSONPath can read, or that reads other
//! flags (`$.flags.…`), does not compile: the environment is then evaluated by the crate.

use flagsmith_flag_engine::engine_eval::context::{Condition, ConditionOperator, ConditionValue};
use flagsmith_flag_engine::types::{FlagsmithValue, FlagsmithValueType};
use md5::{Digest, Md5};
use regex::Regex;
use semver::Version;

/// Where a condition reads its value from.
#[derive(Debug, Clone)]
pub(crate) enum Property {
    /// No property: only `PERCENTAGE_SPLIT` reads one (the identity's key).
    Nothing,
    /// A trait, by its index in the environment's [`TraitNames`].
    Trait(usize),
    /// A `$.` path of member names; when it finds nothing the engine reads the whole path as a
    /// trait name, which is the index here.
    Member(Member, usize),
}

#[derive(Debug, Clone)]
pub(crate) enum Member {
    EnvironmentKey,
    EnvironmentName,
    Identifier,
    IdentityKey,
    /// `$.identity.traits.NAME`: the trait, unless its value is `null`.
    Trait(usize),
}

/// Trait names the conditions of an environment read, each given an index, so that a request
/// looks each of its traits up once rather than once per condition.
#[derive(Debug, Default)]
pub(crate) struct TraitNames {
    names: std::collections::HashMap<String, usize>,
}

impl TraitNames {
    pub(crate) fn index(&mut self, name: &str) -> usize {
        let next = self.names.len();
        *self.names.entry(name.to_owned()).or_insert(next)
    }

    pub(crate) fn get(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// The comparison operators, which read the condition's value by the trait's type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Equal,
    NotEqual,
    GreaterThan,
    GreaterThanInclusive,
    LessThan,
    LessThanInclusive,
}

/// A condition's value read every way a comparison may need it.
#[derive(Debug, Clone)]
struct Operand {
    text: String,
    /// `true`/`false` in any case, or `1` (the engine's reading for boolean traits).
    loose_bool: Option<bool>,
    /// `true`/`false` in any case (its reading for string traits).
    strict_bool: Option<bool>,
    integer: Option<i64>,
    float: Option<f64>,
    /// `Some` when the value ends in `:semver`: the version, if it parses.
    semver: Option<Option<Version>>,
}

#[derive(Debug, Clone)]
enum Test {
    Compare(Comparison, Operand),
    Contains(String),
    NotContains(String),
    /// `None`: a pattern that does not compile, which never matches.
    Regex(Option<Regex>),
    /// Divisor and remainder, if both parse.
    Modulo(Option<(f64, f64)>),
    In(Vec<String>),
    IsSet,
    IsNotSet,
    /// The percentage, if it parses.
    PercentageSplit(Option<f64>),
}

/// One compiled condition.
#[derive(Debug, Clone)]
pub(crate) struct CompiledCondition {
    property: Property,
    test: Test,
}

/// What a condition may read about the identity being evaluated.
pub(crate) struct Subject<'a> {
    pub(crate) environment_key: &'a str,
    pub(crate) environment_name: &'a str,
    pub(crate) identifier: &'a str,
    /// The identity's key as its context holds it (may be empty).
    pub(crate) key: &'a str,
    /// By [`TraitNames`] index: the request's value of each trait conditions read.
    pub(crate) traits: &'a [Option<&'a FlagsmithValue>],
}

/// A value read for a condition: borrowed from the subject, typed as the engine types it.
#[derive(Clone, Copy)]
struct Read<'a> {
    value_type: &'a FlagsmithValueType,
    text: &'a str,
}

impl<'a> Read<'a> {
    fn of(value: &'a FlagsmithValue) -> Read<'a> {
        Read {
            value_type: &value.value_type,
            text: &value.value,
        }
    }

    fn string(text: &'a str) -> Read<'a> {
        Read {
            value_type: &FlagsmithValueType::String,
            text,
        }
    }
}

/// Reads a property into [`Property`], or `None` where only the engine's JSONPath can read it.
pub(crate) fn compile_property(property: &str, traits: &mut TraitNames) -> Option<Property> {
    if property.is_empty() {
        return Some(Property::Nothing);
    }
    let Some(path) = property.strip_prefix("$.") else {
        return Some(Property::Trait(traits.index(property)));
    };
    let names: Vec<&str> = path.split('.').collect();
    let is_member_name = |name: &&str| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !names.iter().all(is_member_name) {
        return None;
    }
    let member = match names.as_slice() {
        ["environment", "key"] => Member::EnvironmentKey,
        ["environment", "name"] => Member::EnvironmentName,
        ["identity", "identifier"] => Member::Identifier,
        ["identity", "key"] => Member::IdentityKey,
        ["identity", "traits", name] => Member::Trait(traits.index(name)),
        _ => return None,
    };
    Some(Property::Member(member, traits.index(property)))
}

/// Compiles a condition, or `None` where its property needs the engine (see the module).
pub(crate) fn compile(condition: &Condition, traits: &mut TraitNames) -> Option<CompiledCondition> {
    let property = compile_property(&condition.property, traits)?;
    let text = condition.value.as_string();
    let compare = |comparison| Test::Compare(comparison, operand(text.clone()));
    let test = match condition.operator {
        ConditionOperator::Equal => compare(Comparison::Equal),
        ConditionOperator::NotEqual => compare(Comparison::NotEqual),
        ConditionOperator::GreaterThan => compare(Comparison::GreaterThan),
        ConditionOperator::GreaterThanInclusive => compare(Comparison::GreaterThanInclusive),
        ConditionOperator::LessThan => compare(Comparison::LessThan),
        ConditionOperator::LessThanInclusive => compare(Comparison::LessThanInclusive),
        ConditionOperator::Contains => Test::Contains(text),
        ConditionOperator::NotContains => Test::NotContains(text),
        ConditionOperator::Regex => Test::Regex(Regex::new(&text).ok()),
        ConditionOperator::Modulo => Test::Modulo(modulo(&text)),
        ConditionOperator::In => Test::In(match &condition.value {
            ConditionValue::Single(s) => s.split(',').map(|v| v.trim().to_owned()).collect(),
            ConditionValue::Multiple(values) => values.clone(),
        }),
        ConditionOperator::IsSet => Test::IsSet,
        ConditionOperator::IsNotSet => Test::IsNotSet,
        ConditionOperator::PercentageSplit => Test::PercentageSplit(text.parse().ok()),
    };
    Some(CompiledCondition { property, test })
}

fn operand(text: String) -> Operand {
    Operand {
        loose_bool: parse_bool(&text, true),
        strict_bool: parse_bool(&text, false),
        integer: text.parse().ok(),
        float: text.parse().ok(),
        semver: text.strip_suffix(":semver").map(|v| Version::parse(v).ok()),
        text,
    }
}

fn modulo(text: &str) -> Option<(f64, f64)> {
    let mut parts = text.split('|');
    let (divisor, remainder) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((divisor.parse().ok()?, remainder.parse().ok()?))
}

/// The engine's boolean reading: `true`/`false` in any case (its `to_lowercase` can only give
/// these from ASCII letters), and `1` as true where `with_one`.
fn parse_bool(text: &str, with_one: bool) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else if with_one && text == "1" {
        Some(true)
    } else {
        None
    }
}

/// Flagsmith's hashed percentage of `first,second`, in [0, 100]: the MD5 digest as a big-endian
/// integer modulo 9999, scaled as the engine scales it (in `f32`).
pub(crate) fn hashed_percentage(first: &str, second: &str) -> f32 {
    let mut hasher = Md5::new();
    hasher.update(first.as_bytes());
    hasher.update(b",");
    hasher.update(second.as_bytes());
    let digest: [u8; 16] = hasher.finalize().into();
    let bucket = (u128::from_be_bytes(digest) % 9999) as u32;
    (bucket as f32 / 9998.0) * 100.0
}

impl CompiledCondition {
    /// Whether `subject` meets this condition of the segment keyed `segment_key`.
    pub(crate) fn matches(&self, subject: &Subject<'_>, segment_key: &str) -> bool {
        let read = self.read(subject);
        match &self.test {
            Test::PercentageSplit(percentage) => {
                let Some(percentage) = percentage else {
                    return false;
                };
                let split_key = match self.property {
                    Property::Nothing => subject.key,
                    _ => match read {
                        Some(read) => read.text,
                        None => return false,
                    },
                };
                f64::from(hashed_percentage(segment_key, split_key)) <= *percentage
            }
            Test::IsSet => read.is_some(),
            Test::IsNotSet => read.is_none(),
            Test::In(values) => read.is_some_and(|read| {
                *read.value_type != FlagsmithValueType::Bool
                    && values.iter().any(|value| value == read.text)
            }),
            test => read.is_some_and(|read| test_value(test, read)),
        }
    }

    fn read<'a>(&self, subject: &Subject<'a>) -> Option<Read<'a>> {
        let by_name = |index: usize| subject.traits.get(index).copied().flatten().map(Read::of);
        match &self.property {
            Property::Nothing => None,
            Property::Trait(index) => by_name(*index),
            Property::Member(member, whole_path) => {
                let found = match member {
                    Member::EnvironmentKey => Some(Read::string(subject.environment_key)),
                    Member::EnvironmentName => Some(Read::string(subject.environment_name)),
                    Member::Identifier => Some(Read::string(subject.identifier)),
                    Member::IdentityKey => Some(Read::string(subject.key)),
                    Member::Trait(index) => {
                        by_name(*index).filter(|read| *read.value_type != FlagsmithValueType::None)
                    }
                };
                found.or_else(|| by_name(*whole_path))
            }
        }
    }
}

/// The operators that read a value present, as the engine's `parse_and_match`.
fn test_value(test: &Test, read: Read<'_>) -> bool {
    match test {
        Test::Modulo(parts) => parts.is_some_and(|(divisor, remainder)| {
            read.text
                .parse::<f64>()
                .is_ok_and(|value| ((value % divisor) - remainder).abs() < 1e-10)
        }),
        Test::Regex(regex) => regex.as_ref().is_some_and(|re| re.is_match(read.text)),
        Test::Contains(text) => read.text.contains(text.as_str()),
        Test::NotContains(text) => !read.text.contains(text.as_str()),
        Test::Compare(comparison, operand) => compare_typed(*comparison, operand, read),
        _ => false,
    }
}

fn compare_typed(comparison: Comparison, operand: &Operand, read: Read<'_>) -> bool {
    let text = read.text;
    match read.value_type {
        FlagsmithValueType::Bool => match (parse_bool(text, true), operand.loose_bool) {
            (Some(value), Some(wanted)) => equality(comparison, value, wanted),
            _ => false,
        },
        FlagsmithValueType::Integer => match (text.parse::<i64>(), operand.integer) {
            (Ok(value), Some(wanted)) => order(comparison, value, wanted),
            _ => false,
        },
        FlagsmithValueType::Float => match (text.parse::<f64>(), operand.float) {
            (Ok(value), Some(wanted)) => order(comparison, value, wanted),
            _ => false,
        },
        FlagsmithValueType::String => compare_string(comparison, operand, text),
        FlagsmithValueType::None => false,
    }
}

fn compare_string(comparison: Comparison, operand: &Operand, text: &str) -> bool {
    if let Some(version) = &operand.semver {
        let Some(wanted) = version else {
            return false;
        };
        return Version::parse(text).is_ok_and(|value| order(comparison, &value, wanted));
    }
    if let (Some(value), Some(wanted)) = (parse_bool(text, false), operand.strict_bool) {
        return equality(comparison, value, wanted);
    }
    if let (Ok(value), Some(wanted)) = (text.parse::<i64>(), operand.integer) {
        return order(comparison, value, wanted);
    }
    if let (Ok(value), Some(wanted)) = (text.parse::<f64>(), operand.float) {
        return order(comparison, value, wanted);
    }
    order(comparison, text, operand.text.as_str())
}

fn equality(comparison: Comparison, value: bool, wanted: bool) -> bool {
    match comparison {
        Comparison::Equal => value == wanted,
        Comparison::NotEqual => value != wanted,
        _ => false,
    }
}

fn order<T: PartialOrd>(comparison: Comparison, value: T, wanted: T) -> bool {
    match comparison {
        Comparison::Equal => value == wanted,
        Comparison::NotEqual => value != wanted,
        Comparison::GreaterThan => value > wanted,
        Comparison::LessThan => value < wanted,
        Comparison::GreaterThanInclusive => value >= wanted,
        Comparison::LessThanInclusive => value <= wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_percentage_is_flagsmiths() {
        let engine = |a: &str, b: &str| {
            flagsmith_flag_engine::utils::hashing::get_hashed_percentage_for_object_ids(
                vec![a, b],
                1,
            )
        };
        for (a, b) in [("1", "2"), ("seg", "env_user-7"), ("", ""), ("é", "ü,x")] {
            assert_eq!(hashed_percentage(a, b), engine(a, b), "{a} {b}");
        }
    }

    #[test]
    fn only_member_paths_the_engine_reads_directly_compile() {
        let mut traits = TraitNames::default();
        let mut compiles = |p: &str| compile_property(p, &mut traits).is_some();
        assert!(compiles("plan") && compiles("") && compiles("$.identity.traits.plan"));
        assert!(compiles("$.environment.name") && compiles("$.identity.key"));
        assert!(!compiles("$.flags.banner.enabled"));
        assert!(!compiles("$.identity['identifier']"));
        assert!(!compiles("$.identity.traits.my-plan"));
    }
}
