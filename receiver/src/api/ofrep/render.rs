//! OFREP answers written straight into one buffer from the compiled evaluation's borrowed
//! outcomes, as the identity answer is (`crate::api::sdk::identity_flags`): no owned flag, no
//! serde per request. What does not depend on who asks is rendered once per change of the
//! environment ([`OfrepPieces`]): every flag the prepared environment can give (key, value,
//! reason, variant, metadata, escaped), and the environment's own answer.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use crate::api::ofrep::answer::write_flag;
use crate::documents::EnvCache;
use crate::evaluation::{Evaluation, FlagOutcome, IdentityInput, PreparedEnvironment};

/// The parts of OFREP answers kept until the environment changes.
#[derive(Debug)]
pub struct OfrepPieces {
    /// Each flag the prepared environment can give (by [`FlagOutcome::prepared`]), rendered on
    /// first use.
    flags: Vec<OnceLock<Box<[u8]>>>,
    /// The environment's own flags (a context without `targetingKey`), and their bulk answer.
    environment: OnceLock<(Evaluation, Bytes)>,
    /// The last bulk answer's length: the next one's buffer is allocated once.
    last_len: AtomicUsize,
}

impl OfrepPieces {
    pub fn new(prepared: &PreparedEnvironment) -> OfrepPieces {
        OfrepPieces {
            flags: (0..prepared.prepared_outcomes())
                .map(|_| OnceLock::new())
                .collect(),
            environment: OnceLock::new(),
            last_len: AtomicUsize::new(1024),
        }
    }

    /// Appends `flag`'s answer: copied whole where this environment rendered it before.
    pub fn write_flag(&self, out: &mut Vec<u8>, flag: &FlagOutcome<'_>) {
        let slot = flag.prepared.and_then(|n| self.flags.get(n as usize));
        crate::api::write_kept(out, slot, |out| write_flag(out, flag));
    }

    /// Appends the bulk answer of `flags`: `{"flags":[...]}`.
    pub fn write_bulk(&self, out: &mut Vec<u8>, flags: &[FlagOutcome<'_>]) {
        out.extend_from_slice(b"{\"flags\":[");
        for (i, flag) in flags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            self.write_flag(out, flag);
        }
        out.extend_from_slice(b"]}");
    }

    /// The environment's own flags and their bulk answer, evaluated once per change.
    fn environment(&self, prepared: &PreparedEnvironment) -> &(Evaluation, Bytes) {
        self.environment.get_or_init(|| {
            let evaluation = prepared.evaluate(None, &[]);
            let flags: Vec<FlagOutcome<'_>> = evaluation.flags.iter().map(Into::into).collect();
            let mut body = Vec::new();
            self.write_bulk(&mut body, &flags);
            (evaluation, body.into())
        })
    }
}

/// The pieces of `env`, built on first use after each change.
fn pieces_of(env: &EnvCache) -> std::sync::Arc<OfrepPieces> {
    env.answer_parts(|env| OfrepPieces::new(&env.prepared()))
}

/// The bulk answer for `identity` (the environment's own flags when `None`).
pub fn bulk_answer(env: &EnvCache, identity: Option<&IdentityInput>) -> Bytes {
    let prepared = env.prepared();
    let pieces = pieces_of(env);
    let Some(identity) = identity else {
        return pieces.environment(&prepared).1.clone();
    };
    let overlay = env.identity_overlay(&identity.identifier);
    let mut out = Vec::with_capacity(pieces.last_len.load(Ordering::Relaxed) + 256);
    prepared.evaluate_identity(identity, &overlay, |flags, _| {
        pieces.write_bulk(&mut out, flags);
    });
    pieces.last_len.store(out.len(), Ordering::Relaxed);
    out.into()
}

/// The answer for the flag named `key`, if the environment shows it to `identity`.
pub fn flag_answer(env: &EnvCache, identity: Option<&IdentityInput>, key: &str) -> Option<Vec<u8>> {
    let prepared = env.prepared();
    let pieces = pieces_of(env);
    let write = |flag: &FlagOutcome<'_>| {
        let mut out = Vec::with_capacity(256);
        pieces.write_flag(&mut out, flag);
        out
    };
    let Some(identity) = identity else {
        let (evaluation, _) = pieces.environment(&prepared);
        let flag = evaluation.flags.iter().find(|flag| flag.name == key)?;
        return Some(write(&flag.into()));
    };
    let overlay = env.identity_overlay(&identity.identifier);
    prepared.evaluate_identity(identity, &overlay, |flags, _| {
        flags.iter().find(|flag| flag.name == key).map(write)
    })
}
