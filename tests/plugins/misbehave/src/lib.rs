//! A balancer that misbehaves in the way its config names, for the gateway's bad-input tests:
//! `trap-configure`, `loop-pick`, `grow-pick` (allocates 64 MiB), `bad-id`, `trap-pick`.
//! Any other config: round-robin, counting picks in the `picks` counter; `feedback` also asks
//! for feedback calls, `request-line` for the HTTP method and path in the context. Feedback
//! calls are counted in `feedbacks`, picks that saw a path in `with-path`.

use std::hint::black_box;
use switchyard_sdk::{Balancer, Context, Endpoint, Outcome, Service, Settings, host};

#[derive(Default)]
pub struct Misbehave {
    mode: String,
    ids: Vec<u32>,
    next: usize,
}

impl Balancer for Misbehave {
    fn configure(&mut self, config: &str) -> Result<Settings, String> {
        if config == "trap-configure" {
            panic!("misbehave: trapping in configure as asked");
        }
        if config == "refuse" {
            return Err("misbehave: refusing this config as asked".into());
        }
        self.mode = config.to_string();
        Ok(Settings {
            feedback: config == "feedback",
            request_line: config == "request-line",
            ..Settings::default()
        })
    }

    fn feedback(&mut self, _endpoint: u32, _outcome: Outcome) {
        host::counter_add("feedbacks", 1);
    }

    fn update(&mut self, _service: &Service, endpoints: &[Endpoint]) {
        self.ids = switchyard_sdk::usable(endpoints).map(|e| e.id).collect();
    }

    fn pick(&mut self, ctx: &Context) -> Option<u32> {
        match self.mode.as_str() {
            "loop-pick" => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "grow-pick" => {
                let v: Vec<u8> = vec![1u8; 64 << 20];
                black_box(&v);
                None
            }
            "bad-id" => Some(0xdead_beef),
            "trap-pick" => panic!("misbehave: trapping in pick as asked"),
            _ => {
                host::counter_add("picks", 1);
                if ctx.path.is_some() {
                    host::counter_add("with-path", 1);
                }
                if self.ids.is_empty() {
                    return None;
                }
                self.next = (self.next + 1) % self.ids.len();
                Some(self.ids[self.next])
            }
        }
    }
}

switchyard_sdk::export_balancer!(Misbehave);
