//! Delivery against a real HTTP sink on 127.0.0.1: signing, rotation, redirects, timeouts, and
//! (with the store) lanes, retries and dead letters. One module per area; the helpers every area
//! shares (conformance vectors, the client, signature checks) live here.

mod admin;
mod client;
mod crash;
mod dispatcher;
mod retention;
mod secrets;
#[path = "../support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use flagpost::delivery::DeliveryClient;
use flagpost::signing::{Secret, VerifyError, verify_standard};
use serde_json::Value;

fn conformance(file: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance"
    ))
    .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The seed body and the secrets its reference signatures were made with.
fn seed_vector() -> (Vec<u8>, Secret, Secret) {
    let doc: Value = serde_json::from_slice(&conformance("signatures.json")).unwrap();
    let v = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["body_file"] == "flag_updated_seed.json")
        .unwrap();
    let flagsmith = Secret::new(v["flagsmith"]["secret"].as_str().unwrap()).unwrap();
    let standard = Secret::new(v["standard"]["secret"].as_str().unwrap()).unwrap();
    (conformance("flag_updated_seed.json"), flagsmith, standard)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn client() -> DeliveryClient {
    DeliveryClient::new(Duration::from_secs(10)).unwrap()
}

/// Checks a received request's Standard Webhooks signature with one secret.
fn verify(r: &support::sink::Received, secret: &Secret) -> Result<(), VerifyError> {
    verify_standard(
        std::slice::from_ref(secret),
        r.header("webhook-id").unwrap(),
        r.header("webhook-timestamp").unwrap(),
        r.header("webhook-signature").unwrap(),
        &r.body,
        now_unix(),
        300,
    )
}

/// How many `v1,` entries a request's `webhook-signature` carries.
fn signature_count(r: &support::sink::Received) -> usize {
    r.header("webhook-signature").unwrap().split(' ').count()
}

fn sequences(received: &[support::sink::Received]) -> Vec<u64> {
    received
        .iter()
        .map(|r| r.header("x-flagpost-sequence").unwrap().parse().unwrap())
        .collect()
}
