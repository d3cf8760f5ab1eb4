//! What parsing and validating one vote costs: `cargo bench -p bandvote-core --bench parse`.

use std::hint::black_box;

use bandvote_core::Vote;
use criterion::{Criterion, criterion_group, criterion_main};

fn parse(c: &mut Criterion) {
    let ascii = br#"{"name":"Soda Stereo","album":"Cancion Animal","year":"1990","rank":"5"}"#;
    let accented = r#"{"name":"Los Fabulosos Cadillacs","album":"Vasos vacíos","year":"1993","rank":"4"}"#.as_bytes();
    c.bench_function("parse_json, an ASCII vote", |b| b.iter(|| Vote::parse_json(black_box(ascii))));
    c.bench_function("parse_json, a vote with an accent", |b| b.iter(|| Vote::parse_json(black_box(accented))));
}

criterion_group!(benches, parse);
criterion_main!(benches);
