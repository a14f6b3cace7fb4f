//! No request input panics the server: seeded random and mutated inputs through every parser
//! on the request path (bodies, protobuf, canonicalization, the three patch types, selectors).
//! Each call must return `Ok` or `Err`; a panic fails the test.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::patch::{PatchType, apply};
use super::protobuf;
use crate::resources::RESOURCES;
use crate::selector::{FieldSelector, LabelSelector};

const SEEDS: &[&str] = &[
    r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","labels":{"x":"y"}},"spec":{"ports":[{"port":80,"targetPort":"http"}],"selector":{"app":"a"}}}"#,
    r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i","ports":[{"containerPort":1}]}]},"status":{"podIP":"1.2.3.4"}}"#,
    r#"{"addressType":"IPv4","endpoints":[{"addresses":["1.1.1.1"],"conditions":{"ready":true}}],"ports":[{"port":1}]}"#,
    r#"[{"op":"add","path":"/metadata/labels/z","value":"1"},{"op":"remove","path":"/spec"}]"#,
    r#"{"spec":{"$setElementOrder/ports":[{"port":1}],"ports":[{"port":1,"$patch":"delete"}],"$retainKeys":["ports"]}}"#,
];

fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..rng.random_range(1..6) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..4) {
            0 => b[i] = rng.random(),
            1 => {
                b.remove(i);
            }
            2 => b.insert(i, b"{}[]\":,-0123456789$nulltrue"[rng.random_range(0..27)]),
            _ => b.truncate(i),
        }
    }
    b
}

#[test]
fn random_inputs_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5717c4);
    let docs: Vec<Value> = SEEDS
        .iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect();
    for round in 0..4000 {
        let seed = SEEDS[round % SEEDS.len()].as_bytes();
        let input = if round % 5 == 0 {
            (0..rng.random_range(0..64)).map(|_| rng.random()).collect()
        } else {
            mutate(&mut rng, seed)
        };
        // Bodies as the API decodes them.
        if let Ok(v) = serde_json::from_slice::<Value>(&input) {
            for r in RESOURCES {
                let _ = r.canonicalize(&v);
            }
        }
        let _ = serde_yaml::from_slice::<Value>(&input);
        let mut pb = b"k8s\0".to_vec();
        pb.extend(&input);
        let _ = protobuf::decode(&pb);
        // Patches of every kind against realistic documents.
        let doc = &docs[round % docs.len()];
        for kind in [PatchType::Json, PatchType::Merge, PatchType::Strategic] {
            let _ = apply(kind, doc, &input);
            let _ = apply(kind, &json!(null), &input);
        }
        // Selectors from arbitrary text.
        let text = String::from_utf8_lossy(&input);
        if let Ok(sel) = LabelSelector::parse(&text) {
            let _ = sel.matches(&Default::default());
        }
        if let Ok(f) = FieldSelector::parse(&text) {
            let _ = f.matches(doc);
        }
    }
}
