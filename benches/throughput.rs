//! Benchmarks print figures; they are never timed tests. Areas add their
//! measurements here as they land (see docs/benchmarks.md).

fn main() {
    println!("prereg-station benchmarks: none registered yet");
}
