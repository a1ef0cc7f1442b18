//! The `rotor` binary: everything is in the library; see `rotor::cli`.

fn main() -> std::process::ExitCode {
    rotor::cli::main()
}
