//! Ground truth for the unwinding tests: a Rust release build (no frame pointers: the
//! walk needs the CFI of the program and of Rust's std) calling its probed leaf through two
//! chains of ten functions each. argv: CALLS [GOFILE], as unwind_corpus.c: one warm-up call,
//! then (with GOFILE) "warm" and a wait for the file, then CALLS calls per chain, then a
//! moment's stay.
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use std::{env, thread};

/// The probed function: an unmangled name that gdb and the agent both take as it is.
#[no_mangle]
#[inline(never)]
pub extern "C" fn corpus_leaf(n: u64) -> u64 {
    let mut h = black_box(n) ^ 0x9e37_79b9_7f4a_7c15;
    for i in 0..64u64 {
        h = h.rotate_left(5) ^ i.wrapping_mul(0x100_0000_01b3);
    }
    black_box(h)
}

// Each level calls the next and then uses its result: not a tail call, never inlined.
macro_rules! level {
    ($name:ident, $next:ident) => {
        #[inline(never)]
        fn $name(n: u64) -> u64 {
            let r = $next(black_box(n + 1));
            black_box(r.wrapping_add(n))
        }
    };
}

level!(a10, corpus_leaf);
level!(a9, a10);
level!(a8, a9);
level!(a7, a8);
level!(a6, a7);
level!(a5, a6);
level!(a4, a5);
level!(a3, a4);
level!(a2, a3);
level!(a1, a2);
level!(b10, corpus_leaf);
level!(b9, b10);
level!(b8, b9);
level!(b7, b8);
level!(b6, b7);
level!(b5, b6);
level!(b4, b5);
level!(b3, b4);
level!(b2, b3);
level!(b1, b2);

#[inline(never)]
fn warm_up() -> u64 {
    black_box(corpus_leaf(7))
}

fn main() {
    let args: Vec<String> = env::args().collect();
    let calls: u64 = args[1].parse().expect("CALLS");
    let mut total = warm_up();
    if args.len() > 2 {
        println!("warm");
        std::io::stdout().flush().expect("stdout");
        for _ in 0..2400 {
            if Path::new(&args[2]).exists() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    for i in 0..calls {
        total = total.wrapping_add(a1(i));
    }
    for i in 0..calls {
        total = total.wrapping_add(b1(i));
    }
    println!("{}", total);
    std::io::stdout().flush().expect("stdout");
    if args.len() > 2 {
        thread::sleep(Duration::from_secs(1));
    }
}
