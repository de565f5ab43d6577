//! `alias` test plugin: returns a result whose lifted size is far larger than its own memory.
//!
//! It answers `send` with 96 headers whose names and values all point at one 512 KiB
//! buffer: about 1 MiB of guest memory that lifts to 96 MiB on the host (under wasmtime's
//! default 128 MiB bound on one lift) unless the host bounds what it copies. Generated bindings never alias like this, so the export is
//! written by hand against the canonical ABI of `hookgate:plugin/transformer@0.1.0`.

#![cfg(target_arch = "wasm32")]
// The generated ABI shims flatten records into one parameter per field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "transformer",
});

const SHARED_BYTES: usize = 512 * 1024;
const HEADERS: usize = 96;

static SHARED: [u8; SHARED_BYTES] = [b'a'; SHARED_BYTES];

/// The canonical ABI layout of `result<outcome, string>` holding `ok(send(request))`:
/// result tag, outcome tag, then the request's url, headers and body as (pointer, length).
#[repr(C, align(4))]
struct ReturnArea {
    result_tag: u32,
    outcome_tag: u32,
    url: Slice,
    headers: Slice,
    body: Slice,
}

/// A string or list in the canonical ABI: pointer, then length.
#[repr(C)]
#[derive(Clone, Copy)]
struct Slice {
    ptr: u32,
    len: u32,
}

/// One `header` record.
#[repr(C)]
struct HeaderRecord {
    name: Slice,
    value: Slice,
}

/// The flattened `transform` export: the event's id, type, timestamp and payload, the
/// request's url, headers and body, and the config; the result goes back through memory.
#[allow(clippy::too_many_arguments)]
#[unsafe(export_name = "transform")]
extern "C" fn transform(
    _id: *const u8,
    _id_len: usize,
    _event_type: *const u8,
    _event_type_len: usize,
    _timestamp: f64,
    _payload: *const u8,
    _payload_len: usize,
    url: *const u8,
    url_len: usize,
    _headers: *const u8,
    _headers_len: usize,
    _body: *const u8,
    _body_len: usize,
    _config: *const u8,
    _config_len: usize,
) -> *const ReturnArea {
    let shared = Slice {
        ptr: SHARED.as_ptr() as u32,
        len: SHARED_BYTES as u32,
    };
    let headers: Vec<HeaderRecord> = (0..HEADERS)
        .map(|_| HeaderRecord {
            name: shared,
            value: shared,
        })
        .collect();
    let headers = headers.leak();
    let area = Box::new(ReturnArea {
        result_tag: 0,
        outcome_tag: 0,
        url: Slice {
            ptr: url as u32,
            len: url_len as u32,
        },
        headers: Slice {
            ptr: headers.as_ptr() as u32,
            len: HEADERS as u32,
        },
        body: Slice {
            ptr: SHARED.as_ptr() as u32,
            len: 2,
        },
    });
    Box::leak(area)
}

/// The allocator the host lowers the call's strings and lists into.
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use std::alloc::{Layout, alloc, realloc};
    let Ok(layout) = Layout::from_size_align(new_len.max(1), align) else {
        std::process::abort();
    };
    // SAFETY: the host passes back a pointer this function returned, with the layout it was
    // allocated with, or a null pointer for a fresh allocation.
    let new = unsafe {
        if old.is_null() {
            alloc(layout)
        } else {
            let old_layout = Layout::from_size_align_unchecked(old_len.max(1), align);
            realloc(old, old_layout, new_len.max(1))
        }
    };
    if new.is_null() {
        std::process::abort();
    }
    new
}
