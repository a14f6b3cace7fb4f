//! The few WASI functions Rust's standard library calls on its own inside a plugin: random
//! seeds (every `HashMap` asks for one), random bytes, and the clocks behind `Instant` and
//! `SystemTime`. They are defined for whatever 0.2.x version a component imports; every other
//! WASI import (environment, files, sockets, stdio) stays a trap, so a plugin gets no access.

use wasmtime::component::{Component, ComponentType, Lift, Linker, Lower};
use wasmtime::{Engine, StoreContextMut};

use super::bindings::HostState;

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lift, Lower, Clone, Copy)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

fn bytes(len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len.min(1 << 20) as usize];
    rand::fill(&mut v[..]);
    v
}

/// Defines the supported functions in `linker` for the WASI interfaces `component` imports.
pub fn define(
    linker: &mut Linker<HostState>,
    component: &Component,
    engine: &Engine,
) -> wasmtime::Result<()> {
    let names: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    for name in names {
        let Some((iface, _version)) = name.split_once('@') else {
            continue;
        };
        match iface {
            "wasi:random/insecure-seed" => {
                linker.instance(&name)?.func_wrap(
                    "insecure-seed",
                    |_: StoreContextMut<'_, HostState>, (): ()| {
                        Ok(((rand::random::<u64>(), rand::random::<u64>()),))
                    },
                )?;
            }
            "wasi:random/random" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap(
                    "get-random-u64",
                    |_: StoreContextMut<'_, HostState>, (): ()| Ok((rand::random::<u64>(),)),
                )?;
                i.func_wrap(
                    "get-random-bytes",
                    |_: StoreContextMut<'_, HostState>, (len,): (u64,)| Ok((bytes(len),)),
                )?;
            }
            "wasi:random/insecure" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap(
                    "get-insecure-random-u64",
                    |_: StoreContextMut<'_, HostState>, (): ()| Ok((rand::random::<u64>(),)),
                )?;
                i.func_wrap(
                    "get-insecure-random-bytes",
                    |_: StoreContextMut<'_, HostState>, (len,): (u64,)| Ok((bytes(len),)),
                )?;
            }
            "wasi:clocks/monotonic-clock" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap("now", |s: StoreContextMut<'_, HostState>, (): ()| {
                    Ok((s.data().started().elapsed().as_nanos() as u64,))
                })?;
                i.func_wrap("resolution", |_: StoreContextMut<'_, HostState>, (): ()| {
                    Ok((1u64,))
                })?;
            }
            "wasi:clocks/wall-clock" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap("now", |_: StoreContextMut<'_, HostState>, (): ()| {
                    let d = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    Ok((Datetime {
                        seconds: d.as_secs(),
                        nanoseconds: d.subsec_nanos(),
                    },))
                })?;
                i.func_wrap("resolution", |_: StoreContextMut<'_, HostState>, (): ()| {
                    Ok((Datetime {
                        seconds: 0,
                        nanoseconds: 1,
                    },))
                })?;
            }
            _ => {}
        }
    }
    Ok(())
}
