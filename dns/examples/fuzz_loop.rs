//! A libFuzzer-free stand-in for `dns/fuzz` on a stable toolchain: random and mutated queries
//! through `mcsd_dns::fuzzing::check_query` for a given number of seconds (default 60).
//! `cargo run --release -p mcsd-dns --example fuzz_loop -- 60`

use std::time::{Duration, Instant};

fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let seeds: [&[u8]; 3] = [
        // a.ns.svc.clusterset.local A, with and without OPT; h.ns.svc… SRV
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x02ns\x03svc\x0aclusterset\x05local\x00\x00\x01\x00\x01",
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x01a\x02ns\x03svc\x0aclusterset\x05local\x00\x00\x01\x00\x01\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00",
        b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01h\x02ns\x03svc\x0aclusterset\x05local\x00\x00\x21\x00\x01",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs: u64 = 0;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            let mut input = seeds[(rand() % 3) as usize].to_vec();
            match rand() % 4 {
                0 => input = (0..rand() % 200).map(|_| rand() as u8).collect(),
                1 => input.truncate((rand() as usize) % (input.len() + 1)),
                _ => {
                    for _ in 0..1 + rand() % 6 {
                        let i = (rand() as usize) % input.len();
                        input[i] = rand() as u8;
                    }
                }
            }
            mcsd_dns::fuzzing::check_query(&input);
            runs += 1;
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!("fuzz_loop: {runs} inputs in {secs} s, no failure");
    }
}
