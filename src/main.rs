//! The `corekv` binary: parse the command line and hand over to the server or the client.
//! Nothing else lives here.

use clap::CommandFactory;
use corekv::config::{Cli, Command};

fn main() {
    let cli = Cli::parse_command_line();
    let code = match cli.command {
        Command::Serve(args) => corekv::server::main(args),
        Command::Client(command) => corekv::client::run(&cli.client, command),
        Command::Completions(args) => corekv::client::completions(args.shell, Cli::command()),
    };
    std::process::exit(code);
}
