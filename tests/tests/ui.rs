//! Compile errors of the attributes: one case per mistake under `ui/<attribute>/`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/**/*.rs");
}
