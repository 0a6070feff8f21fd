//! The `corekv` binary: parse the command line and hand over to the server or the client.
//! Nothing else lives here.

use clap::Parser;
use corekv::config::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => corekv::server::main(args),
        Command::Client(command) => corekv::client::run(command),
    };
    std::process::exit(code);
}
