//! Placeholder until the scope-lang CLI lands (being written alongside).
#[derive(clap::Subcommand)]
pub enum ScopeCommand {
    Fmt { expr: String },
}
impl ScopeCommand {
    pub fn run(self) -> std::process::ExitCode {
        std::process::ExitCode::FAILURE
    }
}
