//! The compiled evaluation that answers identities held to the engine crate's: random identities
//! and traits over every environment of the conformance data (the 199 contexts of Flagsmith's
//! engine suite, and the recorded live documents of every step), the two answers compared whole.
//!
//! Traits are drawn from what the conditions compare with (each value as it is, as a number, a
//! boolean, one off, a version...), so that segments match and miss, and identifiers include
//! those the documents hold overrides for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use flagpost_receiver::api::ofrep::answer::{read_request, reference_bulk};
use flagpost_receiver::api::ofrep::render::OfrepPieces;
use flagpost_receiver::evaluation::{
    EvaluationDocument, FlagOutcome, IdentityInput, PreparedEnvironment, ResolvedFlag, value_json,
};
use flagsmith_flag_engine::engine_eval::context::SegmentRule;
use flagsmith_flag_engine::types::FlagsmithValue;
use serde_json::Value;

/// Identities per environment.
const IDENTITIES: usize = 40;

/// A small deterministic generator (xorshift), so that a failure can be replayed.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Every property a condition reads (as a trait name) and every value conditions compare with.
fn vocabulary(rules: &[SegmentRule], names: &mut Vec<String>, values: &mut Vec<String>) {
    for rule in rules {
        for condition in &rule.conditions {
            let property = &condition.property;
            let name = property
                .strip_prefix("$.identity.traits.")
                .unwrap_or(property);
            names.push(name.to_owned());
            names.push(property.clone());
            values.extend(condition.value.as_vec());
            values.push(condition.value.as_string());
        }
        vocabulary(&rule.rules, names, values);
    }
}

/// A trait value near `seed`: itself, as another type, one off, or something else entirely.
fn near(draw: &mut Draw, seed: &str) -> Value {
    let number = seed.parse::<f64>().ok();
    let base = seed.strip_suffix(":semver").unwrap_or(seed);
    match draw.below(10) {
        0 => Value::from(seed),
        1 => Value::from(base),
        2 => number.map_or(Value::from(seed.len()), |n| Value::from(n as i64)),
        3 => number.map_or(Value::Bool(true), |n| Value::from(n + 1.5)),
        4 => number.map_or(Value::from(false), |n| Value::from((n as i64) - 1)),
        5 => Value::from(format!("{base}.1")),
        6 => Value::from(seed.to_uppercase()),
        7 => Value::Bool(draw.below(2) == 0),
        8 => Value::from(draw.below(200) as i64 - 50),
        _ => Value::from(format!("{}{seed}", draw.below(3))),
    }
}

fn identities(prepared: &PreparedEnvironment, draw: &mut Draw) -> Vec<IdentityInput> {
    let (mut names, mut values) = (Vec::new(), vec!["1".to_owned(), "true".to_owned()]);
    for segment in prepared.context().segments.values() {
        vocabulary(&segment.rules, &mut names, &mut values);
    }
    names.push("extra".to_owned());
    let mut identifiers: Vec<String> = prepared.document_identities().keys().cloned().collect();
    identifiers.extend(values.iter().cloned());
    identifiers.sort();
    (0..IDENTITIES)
        .map(|n| {
            let mut traits = HashMap::new();
            for _ in 0..draw.below(6) {
                let seed = draw_value(draw, &values);
                let value = near(draw, seed);
                if let Ok(value) = serde_json::from_value::<FlagsmithValue>(value) {
                    traits.insert(draw.pick(&names).clone(), value);
                }
            }
            let identifier = match draw.below(3) {
                0 if !identifiers.is_empty() => draw.pick(&identifiers).clone(),
                _ => format!("user-{n}-{}", draw.next() % 1000),
            };
            let key = (draw.below(8) == 0).then(|| format!("key-{}", draw.next() % 100));
            IdentityInput {
                identifier,
                key,
                traits,
            }
        })
        .collect()
}

fn draw_value<'a>(draw: &mut Draw, values: &'a [String]) -> &'a str {
    draw.pick(values).as_str()
}

/// The identity as an OpenFeature context, read as OFREP reads it (`None`: an empty identifier,
/// which OFREP cannot ask for).
fn ofrep_context(identity: &IdentityInput) -> Option<IdentityInput> {
    if identity.identifier.is_empty() {
        return None;
    }
    let mut context = serde_json::Map::new();
    for (name, value) in &identity.traits {
        context.insert(name.clone(), value_json(value));
    }
    context.insert("targetingKey".into(), identity.identifier.clone().into());
    let body = serde_json::to_vec(&serde_json::json!({ "context": context })).unwrap();
    Some(read_request(&body).unwrap().expect("a targeting key"))
}

/// OFREP's bulk answer as the routes write it (compiled evaluation, flags rendered once per
/// environment by `pieces`) against serde's rendering of the engine crate's evaluation, byte
/// for byte: values, variants and reasons agree.
fn compare_ofrep(
    what: &str,
    prepared: &PreparedEnvironment,
    pieces: &OfrepPieces,
    identity: &IdentityInput,
) -> Option<String> {
    let context = ofrep_context(identity)?;
    let mut written = Vec::new();
    prepared.evaluate_identity(&context, &[], |flags, _| {
        pieces.write_bulk(&mut written, flags);
    });
    let engine = prepared.evaluate_with_engine(Some(&context), &[]);
    let flags: Vec<FlagOutcome<'_>> = engine.flags.iter().map(Into::into).collect();
    let reference = reference_bulk(&flags);
    (written != reference).then(|| {
        format!(
            "{what}, OFREP {context:?}:\n written   {}\n reference {}",
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&reference)
        )
    })
}

/// Compares the two evaluations for random identities; answers the failures. Also checks that
/// a flag's `prepared` number always stands for the same flag (answers copy it by that number),
/// and that OFREP's answers agree with the engine crate's evaluation.
fn compare(what: &str, prepared: &PreparedEnvironment, draw: &mut Draw) -> Vec<String> {
    let mut by_number: HashMap<u32, ResolvedFlag> = HashMap::new();
    let mut failures = Vec::new();
    let pieces = OfrepPieces::new(prepared);
    for identity in identities(prepared, draw) {
        failures.extend(compare_ofrep(what, prepared, &pieces, &identity));
        let compiled = prepared.evaluate(Some(&identity), &[]);
        let engine = prepared.evaluate_with_engine(Some(&identity), &[]);
        if compiled != engine {
            failures.push(format!(
                "{what}, {identity:?}:\n compiled {compiled:?}\n engine   {engine:?}"
            ));
        }
        prepared.evaluate_identity(&identity, &[], |flags, _| {
            for flag in flags {
                let Some(number) = flag.prepared else {
                    continue;
                };
                assert!((number as usize) < prepared.prepared_outcomes(), "{what}");
                let held = by_number
                    .entry(number)
                    .or_insert_with(|| flag.to_resolved());
                if *held != flag.to_resolved() {
                    failures.push(format!("{what}: {number} is {held:?} and {flag:?}"));
                }
            }
        });
    }
    failures
}

fn read_jsonc(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let json: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect();
    serde_json::from_str(&json.join("\n")).unwrap()
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(Path::new(crate::common::CONFORMANCE).join(dir))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
    paths.sort();
    paths
}

#[test]
fn the_compiled_evaluation_answers_as_the_engine_on_the_engine_suite_contexts() {
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
    let (mut failures, mut compiled) = (Vec::new(), 0);
    let cases = files("flagsmith-engine-test-data/test_cases");
    assert_eq!(cases.len(), 199);
    for path in &cases {
        let mut context = read_jsonc(path)["context"].clone();
        context.as_object_mut().unwrap().remove("identity");
        let prepared = PreparedEnvironment::from_context(serde_json::from_value(context).unwrap());
        compiled += usize::from(prepared.is_compiled());
        let name = path.file_name().unwrap().to_string_lossy();
        failures.extend(compare(&name, &prepared, &mut draw));
    }
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
    // Only conditions reading a JSONPath the engine alone reads, or other flags, need the crate.
    assert!(compiled >= 193, "only {compiled} of 199 contexts compiled");
}

#[test]
fn the_compiled_evaluation_answers_as_the_engine_on_the_recorded_live_documents() {
    let mut draw = Draw(0x2545_f491_4f6c_dd1d);
    let mut failures = Vec::new();
    let mut environments = 0;
    for path in files("flagsmith-v2.265.0-live/steps") {
        let step: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let Some(documents) = step["environment_documents"].as_object() else {
            continue;
        };
        for (name, document) in documents {
            let parsed = EvaluationDocument::parse(&serde_json::to_vec(document).unwrap()).unwrap();
            let prepared = PreparedEnvironment::build(Some(&parsed), name, &[]);
            assert!(
                prepared.is_compiled(),
                "{}: {name} not compiled",
                path.display()
            );
            environments += 1;
            let what = format!("{} {name}", path.display());
            failures.extend(compare(&what, &prepared, &mut draw));
        }
    }
    assert!(environments >= 50, "{environments} documents");
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

#[path = "../../benches/documents/generate.rs"]
#[allow(dead_code)]
mod generate;

#[test]
fn the_compiled_evaluation_answers_as_the_engine_on_the_benchmarks_documents() {
    let mut draw = Draw(0x5851_f42d_4c95_7f2d);
    let shape = generate::Shape {
        features: 50,
        multivariate: 2,
        segments: 20,
        identities: 20,
        overrides_per_identity: 3,
    };
    let mut failures = Vec::new();
    for version in 1..=3 {
        let document = generate::document(version, &shape, version);
        let parsed = EvaluationDocument::parse(&document).unwrap();
        let prepared = PreparedEnvironment::build(Some(&parsed), "bench", &[]);
        assert!(prepared.is_compiled());
        failures.extend(compare("generated", &prepared, &mut draw));
    }
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}
