//! `cheops scope`: format and explain scopes from the command line. Needs no privileges:
//! it only reads the expression given and prints; the language itself lives in `dsl`.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum ScopeCommand {
    /// Print a scope in canonical form.
    Fmt {
        /// The scope, in scope-lang, as a JSON object of strings, or as service/site.
        expr: String,
    },
    /// Show a scope's tree and what it does for each service.
    Explain {
        /// The scope, in scope-lang, as a JSON object of strings, or as service/site.
        expr: String,
        /// Only the plan of a call to this service.
        #[arg(long)]
        service: Option<String>,
        /// The site where the call arrives (where a service without entry stays).
        #[arg(long)]
        site: Option<String>,
        /// JSON, for machines.
        #[arg(long)]
        json: bool,
    },
}

impl ScopeCommand {
    pub fn run(self) -> ExitCode {
        match self {
            ScopeCommand::Fmt { expr } => match dsl::parse(&expr) {
                Ok(scope) => {
                    println!("{scope}");
                    ExitCode::SUCCESS
                }
                Err(error) => refused(&error),
            },
            ScopeCommand::Explain {
                expr,
                service,
                site,
                json,
            } => match dsl::parse(&expr) {
                Ok(scope) => {
                    // No round trips are measured here: around() keeps only its own site.
                    let round_trips = dsl::RoundTripTable::default();
                    let explanation =
                        dsl::explain(&scope, service.as_deref(), site.as_deref(), &round_trips);
                    if json {
                        println!("{}", explanation.to_json());
                    } else {
                        print!("{explanation}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => refused(&error),
            },
        }
    }
}

/// A scope that does not read: the error on stderr, and exit code 2 (bad input).
fn refused(error: &dsl::ScopeError) -> ExitCode {
    eprintln!("{error}");
    ExitCode::from(2)
}
