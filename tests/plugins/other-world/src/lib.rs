//! A component that is not a switchyard plugin at all.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    inline: "
        package acme:greeter@0.1.0;
        world greeter {
            export greet: func(name: string) -> string;
        }
    ",
});

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Greeter);
