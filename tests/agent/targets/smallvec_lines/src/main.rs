// Reads lines; each goes into a SmallVec through insert_many, the function of RUSTSEC-2021-0003
// in smallvec 1.6.0 (tests/agent/test_plans_live.py).
use smallvec::SmallVec;
use std::io::BufRead;

fn main() {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.expect("a line of text");
        let mut bytes: SmallVec<[u8; 8]> = SmallVec::new();
        bytes.insert_many(0, line.bytes());
        println!("{}", bytes.len());
    }
}
