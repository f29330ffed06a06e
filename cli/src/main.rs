//! `shoal`, the command-line client of a shoal cluster. Everything lives in the library so that
//! unit tests reach it; this file only hands over the process's exit code.

fn main() -> std::process::ExitCode {
    shoal_cli::main()
}
