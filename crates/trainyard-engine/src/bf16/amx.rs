//! Intel AMX: eight tile registers of 16 rows x 64 bytes and `tdpbf16ps`, which adds the
//! product of a 16 x 32 bf16 tile and a 32 x 16 one (stored in pairs) into a 16 x 16 f32 tile.
//! Linux hands the tile state to a process only when asked (`arch_prctl`), once.

use std::sync::OnceLock;

use super::pack::{BLOCK, Packed, TILE_BYTES, TILE_LINES};

/// Bytes in a tile's row: 16 pairs of bf16.
const ROW_BYTES: usize = 64;

/// Whether this CPU has AMX with bf16 and the kernel granted this process its tile state.
pub fn available() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(|| cpu_has_amx_bf16() && request_tile_state())
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_amx_bf16() -> bool {
    use std::arch::x86_64::__cpuid_count;
    #[allow(unused_unsafe)]
    // SAFETY: `cpuid` exists on every x86_64 CPU; leaf 7 is valid when the maximum leaf allows.
    let (max_leaf, features) = unsafe { (__cpuid_count(0, 0).eax, __cpuid_count(7, 0).edx) };
    const AMX_BF16: u32 = 1 << 22;
    const AMX_TILE: u32 = 1 << 24;
    max_leaf >= 7 && features & (AMX_BF16 | AMX_TILE) == AMX_BF16 | AMX_TILE
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_amx_bf16() -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let result: i64;
    // SAFETY: the `arch_prctl` system call with integer arguments (no libc binding needed for
    // one call); it changes only this process's permission to use the tile state.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => result,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tile_state() -> bool {
    false
}

/// The tile configuration `ldtilecfg` reads (palette 1: every tile 16 rows x 64 bytes).
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// This thread's tiles, configured for as long as the value lives.
pub struct Tiles(());

impl Tiles {
    pub fn configure() -> Tiles {
        let mut config = Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        for tile in 0..8 {
            config.bytes_per_row[tile] = ROW_BYTES as u16;
            config.rows[tile] = 16;
        }
        // SAFETY: only reached when `available()`: the CPU has AMX and the process may use it.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
        }
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: as in `configure`; returns the tiles to their initial state.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// The 32 x 32 block (`row_block`, `col_block`) of `left @ right` into `out` (row-major,
/// 32 wide): tiles 0-3 hold the block's four quarters, 4-5 the left tiles, 6-7 the right.
pub fn block(
    left: &Packed<'_>,
    right: &Packed<'_>,
    row_block: usize,
    col_block: usize,
    out: &mut [f32; BLOCK * BLOCK],
) {
    assert_eq!(left.k_tiles, right.k_tiles, "inner dimensions");
    assert!(left.k_tiles > 0);
    let (a0, a1) = (
        left.tiles(2 * row_block).as_ptr(),
        left.tiles(2 * row_block + 1).as_ptr(),
    );
    let (b0, b1) = (
        right.tiles(2 * col_block).as_ptr(),
        right.tiles(2 * col_block + 1).as_ptr(),
    );
    let row_bytes = BLOCK * 4;
    let c = out.as_mut_ptr();
    // SAFETY: the caller holds a `Tiles` (configured); every load reads `k_tiles` whole tiles
    // from a packed buffer that holds them (`pack` sized it to whole 32-line blocks), and the
    // four stores write 16 rows of 64 bytes each inside `out`'s 32 x 32 floats.
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {tile_row}*1]",
            "tileloadd tmm5, [{a1} + {tile_row}*1]",
            "tileloadd tmm6, [{b0} + {tile_row}*1]",
            "tileloadd tmm7, [{b1} + {tile_row}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, {tile_bytes}",
            "add {a1}, {tile_bytes}",
            "add {b0}, {tile_bytes}",
            "add {b1}, {tile_bytes}",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c} + {row_bytes}*1], tmm0",
            "add {c}, 64",
            "tilestored [{c} + {row_bytes}*1], tmm1",
            "add {c}, {lower_left}",
            "tilestored [{c} + {row_bytes}*1], tmm2",
            "add {c}, 64",
            "tilestored [{c} + {row_bytes}*1], tmm3",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            b0 = inout(reg) b0 => _,
            b1 = inout(reg) b1 => _,
            n = inout(reg) left.k_tiles => _,
            c = inout(reg) c => _,
            tile_row = in(reg) ROW_BYTES,
            row_bytes = in(reg) row_bytes,
            tile_bytes = const TILE_BYTES,
            lower_left = const TILE_LINES * BLOCK * 4 - 64,
            options(nostack),
        );
    }
}
