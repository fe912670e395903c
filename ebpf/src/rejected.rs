//! A deliberately invalid eBPF object, for the test of meshproxy's verifier-rejection path
//! (`tests/tests/transparent/t30_bad_environment.rs`, through `--ebpf-object`).
//!
//! It carries meshproxy's first program name, `mesh_connect4`, but reads far past the end of
//! the program's context: the compiler accepts it, the kernel's verifier refuses to load it.
//! That is the one fault of the transparent mode that a correct object cannot produce, so the
//! test needs a real rejection by the real verifier rather than a simulated error.

#![no_std]
#![no_main]

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

/// Rejected at load time with "invalid bpf_context access"; never runs.
#[cgroup_sock_addr(connect4)]
pub fn mesh_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: none, on purpose: offset 4096 is outside `bpf_sock_addr`. The verifier refuses
    // the program, so this load never executes.
    let past_the_end = unsafe { (ctx.sock_addr as *const u8).add(4096) as *const u32 };
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(past_the_end) as i32 }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
