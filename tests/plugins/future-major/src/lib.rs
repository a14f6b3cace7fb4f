//! A balancer for a future major version of the contract: the gateway must refuse it and
//! name both versions.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    inline: "
        package switchyard:plugin@1.0.0;
        interface balancer {
            pick: func(client: u64) -> option<u32>;
        }
        world next-major {
            export balancer;
        }
    ",
});

struct Future;

impl exports::switchyard::plugin::balancer::Guest for Future {
    fn pick(_client: u64) -> Option<u32> {
        Some(0)
    }
}

export!(Future);
