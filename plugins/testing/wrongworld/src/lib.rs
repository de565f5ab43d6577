//! `wrongworld` test plugin: a valid component exporting a different world
//! (`test:wrong/wrong`, `transform: func(x: u32) -> u32`), so gateway tests can check that
//! loading type-checks a plugin against `hookgate:plugin/transformer` and refuses it.

#[cfg(target_arch = "wasm32")]
mod glue {
    wit_bindgen::generate!({ world: "wrong", path: "wit" });

    struct Wrong;

    impl Guest for Wrong {
        fn transform(x: u32) -> u32 {
            x
        }
    }

    export!(Wrong);
}
