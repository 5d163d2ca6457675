//! The `homestead` binary.

fn main() -> std::process::ExitCode {
    homestead::cli::main()
}
