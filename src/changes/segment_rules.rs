//! The checks on a segment's rules, as Flagsmith's engine reads them: rule types, operators, and
//! each operator's value. A rule set that passes here is one the engine can evaluate; anything
//! else is refused on write with the path of what is wrong (`rules[0].conditions[1]: ...`).

use super::segments::{SegmentCondition, SegmentRule};
use crate::error::WriteError;

/// The rule types: every condition and sub-rule must match (ALL), one must (ANY), none may (NONE).
pub const RULE_TYPES: [&str; 3] = ["ALL", "ANY", "NONE"];

/// Every operator Flagsmith's engine evaluates.
pub const OPERATORS: [&str; 14] = [
    "EQUAL",
    "NOT_EQUAL",
    "GREATER_THAN",
    "GREATER_THAN_INCLUSIVE",
    "LESS_THAN",
    "LESS_THAN_INCLUSIVE",
    "CONTAINS",
    "NOT_CONTAINS",
    "REGEX",
    "PERCENTAGE_SPLIT",
    "MODULO",
    "IN",
    "IS_SET",
    "IS_NOT_SET",
];

/// How deep rules nest: Flagsmith's own editor makes two levels; more than this is a mistake.
pub const MAX_RULE_DEPTH: usize = 8;
/// Conditions in one segment, all rules together: bounds what every evaluation walks.
pub const MAX_CONDITIONS: usize = 1000;
/// The longest property name or condition value taken.
pub const MAX_CONDITION_TEXT: usize = 10_000;

/// Checks a segment's rules; the error names the first rule or condition that is wrong.
pub fn validate_rules(rules: &[SegmentRule]) -> Result<(), WriteError> {
    let mut conditions = 0;
    for (i, rule) in rules.iter().enumerate() {
        validate_rule(rule, &format!("rules[{i}]"), 1, &mut conditions)?;
    }
    Ok(())
}

fn invalid(at: &str, problem: impl std::fmt::Display) -> WriteError {
    WriteError::Invalid(format!("segment {at}: {problem}"))
}

fn validate_rule(
    rule: &SegmentRule,
    at: &str,
    depth: usize,
    conditions: &mut usize,
) -> Result<(), WriteError> {
    if depth > MAX_RULE_DEPTH {
        return Err(invalid(
            at,
            format!("rules nest deeper than {MAX_RULE_DEPTH} levels"),
        ));
    }
    if !RULE_TYPES.contains(&rule.rule_type.as_str()) {
        return Err(invalid(
            at,
            format!("type {:?} is not ALL, ANY or NONE", rule.rule_type),
        ));
    }
    *conditions += rule.conditions.len();
    if *conditions > MAX_CONDITIONS {
        return Err(invalid(
            at,
            format!("a segment takes at most {MAX_CONDITIONS} conditions"),
        ));
    }
    for (i, condition) in rule.conditions.iter().enumerate() {
        validate_condition(condition)
            .map_err(|problem| invalid(&format!("{at}.conditions[{i}]"), problem))?;
    }
    for (i, sub) in rule.rules.iter().enumerate() {
        validate_rule(sub, &format!("{at}.rules[{i}]"), depth + 1, conditions)?;
    }
    Ok(())
}

/// What is wrong with one condition, if anything.
fn validate_condition(condition: &SegmentCondition) -> Result<(), String> {
    let operator = condition.operator.as_str();
    if !OPERATORS.contains(&operator) {
        return Err(format!(
            "operator {operator:?} is unknown; it must be one of {}",
            OPERATORS.join(", ")
        ));
    }
    let property = condition.property.as_deref().unwrap_or("");
    if property.len() > MAX_CONDITION_TEXT || condition.value_text().len() > MAX_CONDITION_TEXT {
        return Err(format!(
            "property and value are at most {MAX_CONDITION_TEXT} bytes"
        ));
    }
    // A percentage split hashes the identity, not a trait: it alone needs no property.
    if property.is_empty() && operator != "PERCENTAGE_SPLIT" {
        return Err(format!("{operator} needs a property (a trait name)"));
    }
    let value = match (&condition.value, operator) {
        (_, "IS_SET" | "IS_NOT_SET") => return Ok(()),
        (None, _) => return Err(format!("{operator} needs a value")),
        (Some(value), _) => value.as_str(),
    };
    match operator {
        "REGEX" => regex_syntax::Parser::new()
            .parse(value)
            .map(|_| ())
            .map_err(|e| format!("REGEX value {value:?} does not compile: {e}")),
        "MODULO" => validate_modulo(value),
        "PERCENTAGE_SPLIT" => match value.trim().parse::<f64>() {
            Ok(split) if (0.0..=100.0).contains(&split) => Ok(()),
            _ => Err(format!(
                "PERCENTAGE_SPLIT value {value:?} must be a number from 0 to 100"
            )),
        },
        _ => validate_semver_value(value),
    }
}

/// `divisor|remainder`, both numbers, the divisor not zero.
fn validate_modulo(value: &str) -> Result<(), String> {
    let parsed = value.split_once('|').and_then(|(divisor, remainder)| {
        let divisor = divisor.trim().parse::<f64>().ok()?;
        let remainder = remainder.trim().parse::<f64>().ok()?;
        (divisor.is_finite() && divisor != 0.0 && remainder.is_finite()).then_some(())
    });
    parsed.ok_or_else(|| {
        format!("MODULO value {value:?} must be divisor|remainder, two numbers, the divisor not 0")
    })
}

/// A value ending in `:semver` is compared as a semantic version, so it must be one.
fn validate_semver_value(value: &str) -> Result<(), String> {
    match value.strip_suffix(":semver") {
        Some(version) if !is_semver(version) => Err(format!(
            "value {value:?} ends in :semver but {version:?} is not a semantic version (1.2.3)"
        )),
        _ => Ok(()),
    }
}

/// `MAJOR.MINOR.PATCH[-prerelease][+build]` as semver.org defines it.
fn is_semver(version: &str) -> bool {
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, prerelease) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let numeric = |part: &str| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part == "0" || !part.starts_with('0'))
    };
    let identifiers = |text: &str| {
        text.split('.')
            .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && prerelease.is_none_or(identifiers)
        && build.is_none_or(identifiers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(operator: &str, property: Option<&str>, value: Option<&str>) -> SegmentCondition {
        SegmentCondition {
            operator: operator.into(),
            property: property.map(Into::into),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn each_operator_takes_its_values_and_refuses_others() {
        let good = [
            condition("EQUAL", Some("plan"), Some("pro")),
            condition("GREATER_THAN_INCLUSIVE", Some("v"), Some("2.1.0:semver")),
            condition("LESS_THAN", Some("v"), Some("3.0.0-rc.1+b7:semver")),
            condition("REGEX", Some("email"), Some(r".*@example\.com$")),
            condition("MODULO", Some("n"), Some("2|0")),
            condition("PERCENTAGE_SPLIT", None, Some("30")),
            condition("IN", Some("country"), Some("CN,RU")),
            condition("IS_SET", Some("plan"), None),
        ];
        for c in &good {
            assert_eq!(validate_condition(c), Ok(()), "{c:?}");
        }
        let bad = [
            (condition("SIMILAR", Some("p"), Some("x")), "unknown"),
            (condition("REGEX", Some("p"), Some("(")), "does not compile"),
            (
                condition("MODULO", Some("p"), Some("2")),
                "divisor|remainder",
            ),
            (
                condition("MODULO", Some("p"), Some("0|1")),
                "divisor|remainder",
            ),
            (condition("PERCENTAGE_SPLIT", None, Some("101")), "0 to 100"),
            (
                condition("EQUAL", Some("v"), Some("1.2:semver")),
                "semantic",
            ),
            (condition("EQUAL", None, Some("x")), "needs a property"),
            (condition("EQUAL", Some("p"), None), "needs a value"),
        ];
        for (c, expected) in &bad {
            let problem = validate_condition(c).unwrap_err();
            assert!(problem.contains(expected), "{c:?}: {problem}");
        }
    }

    #[test]
    fn errors_name_the_rule_and_condition() {
        let rules = vec![SegmentRule {
            rule_type: "ALL".into(),
            conditions: vec![],
            rules: vec![SegmentRule {
                rule_type: "ANY".into(),
                conditions: vec![
                    condition("EQUAL", Some("a"), Some("b")),
                    condition("X", Some("a"), Some("b")),
                ],
                rules: vec![],
            }],
        }];
        let error = validate_rules(&rules).unwrap_err().to_string();
        assert!(error.contains("rules[0].rules[0].conditions[1]"), "{error}");
        let typed = vec![SegmentRule {
            rule_type: "SOME".into(),
            conditions: vec![],
            rules: vec![],
        }];
        assert!(validate_rules(&typed).is_err());
    }
}
