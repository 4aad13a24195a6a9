//! The `stars` command. Run `stars --help`.
fn main() -> std::process::ExitCode {
    stars::main()
}
