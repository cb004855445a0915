//! The `flagpost` binary: everything is in the library's [`flagpost::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    flagpost::cli::main()
}

// glibc's allocator was about a tenth of the writer thread's profile under load (malloc, free and
// their consolidation); with mimalloc, durable changes through the API rose by 8-26% in A/B runs of
// the change-path benchmark's wrk script.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
