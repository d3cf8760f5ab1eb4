//! `--config FILE` (or `BANDVOTE_CONFIG`): a TOML file of settings, layered as compiled defaults <
//! file < `BANDVOTE_*` environment < flags. Its keys are the long flags: top-level keys set the
//! options every subcommand has (`log-format`, `shutdown-grace-secs`), and a table per subcommand
//! sets that subcommand's (`[up]`, `[api]`, ...):
//!
//! ```toml
//! [up]
//! listen = "0.0.0.0:8080"
//! data-dir = "/var/lib/bandvote"
//! vote-policy = "once"
//! ```
//!
//! The file's values become the flags' defaults before the command line is parsed, so clap's own
//! precedence (flag, then environment, then default) gives the layering, and `--help` shows them.
//! A key that is not a flag is refused, naming it; every error of the file is printed at once.

use std::{ffi::OsString, path::PathBuf};

use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches, error::ErrorKind};

use crate::cli::Cli;

/// Parses `args` (the program name first) with the defaults of the config file it names, if any.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Cli::command();
    if let Some(path) = config_path(&args) {
        let shown = path.display();
        let text = std::fs::read_to_string(&path)
            .map_err(|error| invalid(&mut command, format!("cannot read the config file {shown}: {error}")))?;
        let errors;
        (command, errors) = with_file(command, &text);
        if !errors.is_empty() {
            let errors = errors.join("\n  ");
            return Err(invalid(&mut command, format!("the config file {shown} is not valid:\n  {errors}")));
        }
    }
    let matches = command.try_get_matches_from_mut(&args)?;
    Cli::from_arg_matches(&matches).map_err(|error| error.format(&mut command))
}

/// The `--config` of `args`, or `BANDVOTE_CONFIG`, as clap reads it (errors are left for the real
/// parse to report).
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    // Without the help and version flags, so that `--help` shows the file's values too.
    let mut command = Cli::command().ignore_errors(true).disable_help_flag(true).disable_version_flag(true);
    let roles: Vec<String> = command.get_subcommands().map(|sub| sub.get_name().to_owned()).collect();
    for role in roles {
        command = command.mut_subcommand(role, |sub| sub.disable_help_flag(true));
    }
    let matches = command.try_get_matches_from(args).ok()?;
    matches.get_one::<PathBuf>("config").cloned()
}

fn invalid(command: &mut Command, message: String) -> clap::Error {
    command.error(ErrorKind::InvalidValue, message)
}

/// `command` with the settings of the TOML `text` as its defaults, and every error found in it.
fn with_file(mut command: Command, text: &str) -> (Command, Vec<String>) {
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(error) => return (command, vec![format!("{error}").trim_end().to_owned()]),
    };
    let mut errors = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(section) => {
                if command.find_subcommand(&key).is_none() {
                    let names: Vec<&str> = command.get_subcommands().map(Command::get_name).collect();
                    errors.push(format!("unknown section [{key}] (sections are subcommands: {})", names.join(", ")));
                    continue;
                }
                command =
                    command.mut_subcommand(&key, |sub| with_section(sub, &format!("[{key}]"), section, &mut errors));
            }
            value => command = with_value(command, "the top level", &key, value, &mut errors),
        }
    }
    (command, errors)
}

fn with_section(mut command: Command, place: &str, section: toml::Table, errors: &mut Vec<String>) -> Command {
    for (key, value) in section {
        command = with_value(command, place, &key, value, errors);
    }
    command
}

/// `command` with `value` as the default of its flag `--key`.
fn with_value(command: Command, place: &str, key: &str, value: toml::Value, errors: &mut Vec<String>) -> Command {
    let Some(arg) = command.get_arguments().find(|arg| settable(arg) && arg.get_long() == Some(key)) else {
        let known: Vec<&str> = command.get_arguments().filter(|a| settable(a)).filter_map(Arg::get_long).collect();
        errors.push(format!("unknown key `{key}` in {place} (the keys there are: {})", known.join(", ")));
        return command;
    };
    let values = match strings(value) {
        Ok(values) => values,
        Err(error) => {
            errors.push(format!("`{key}` in {place}: {error}"));
            return command;
        }
    };
    let many = arg.get_value_delimiter().is_some() || matches!(arg.get_action(), ArgAction::Append);
    if values.len() != 1 && !many {
        errors.push(format!("`{key}` in {place}: one value expected, not a list"));
        return command;
    }
    let id = arg.get_id().clone();
    command.mut_arg(id, |arg| {
        // A secret from the file must not show in `--help` either.
        let hide = arg.is_hide_env_values_set();
        arg.default_values(values).hide_default_value(hide)
    })
}

/// Flags a file may set: not `--config` itself, not `--help` or `--version`, not positionals.
fn settable(arg: &Arg) -> bool {
    let id = arg.get_id().as_str();
    arg.get_long().is_some() && !matches!(id, "config" | "help" | "version")
}

/// A TOML value as the strings a flag would be given.
fn strings(value: toml::Value) -> Result<Vec<String>, String> {
    fn scalar(value: toml::Value) -> Result<String, String> {
        match value {
            toml::Value::String(text) => Ok(text),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(x) => Ok(x.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(format!("expected a string, number or boolean, found {}", other.type_str())),
        }
    }
    match value {
        toml::Value::Array(items) => items.into_iter().map(scalar).collect(),
        value => scalar(value).map(|value| vec![value]),
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, path::PathBuf};

    use crate::cli::Command;

    use super::parse_from;

    /// A config file of this test, removed when dropped.
    struct File(PathBuf);

    impl File {
        fn new(text: &str) -> Self {
            let path = std::env::temp_dir().join(format!("bandvote-config-{}.toml", uuid::Uuid::now_v7().simple()));
            std::fs::write(&path, text).expect("write the config file");
            Self(path)
        }

        fn arg(&self) -> String {
            self.0.to_str().expect("utf-8 path").to_owned()
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn up_listen(args: &[&str]) -> SocketAddr {
        match parse_from(args).expect("parses").command {
            Command::Up(up) => up.listen,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_file_sets_what_no_flag_sets() {
        let file = File::new("log-format = \"json\"\n[up]\nlisten = \"127.0.0.1:9999\"\n");
        let cli = parse_from(["bandvote", "--config", &file.arg(), "up"]).expect("parses");
        assert!(cli.log_format.is_json());
        let Command::Up(up) = cli.command else { panic!("up") };
        assert_eq!(up.listen, "127.0.0.1:9999".parse().expect("addr"));
        assert_eq!(up.fairness.voter_header, "x-voter-id", "the rest keeps its default");
        let Command::Up(up) = parse_from(["bandvote", "up", "--config", &file.arg()]).expect("parses").command else {
            panic!("up")
        };
        assert_eq!(up.listen, "127.0.0.1:9999".parse().expect("addr"), "--config after the subcommand");
    }

    #[test]
    fn a_flag_beats_the_file() {
        let file = File::new("[up]\nlisten = \"127.0.0.1:9999\"\n");
        let listen = up_listen(&["bandvote", "--config", &file.arg(), "up", "--listen", "127.0.0.1:7777"]);
        assert_eq!(listen, "127.0.0.1:7777".parse().expect("addr"));
    }

    #[test]
    fn sections_of_other_subcommands_are_checked_and_left_alone() {
        let file = File::new(
            "[api]\nport = 9000\nadmin-token = \"t0k3n\"\n[consumer]\npipelines = [\"tally\"]\n[load]\njson = true\n",
        );
        let listen = up_listen(&["bandvote", "--config", &file.arg(), "up"]);
        assert_eq!(listen, "127.0.0.1:8080".parse().expect("addr"));
        let Command::Api(api) = parse_from(["bandvote", "--config", &file.arg(), "api"]).expect("parses").command
        else {
            panic!("api")
        };
        let config = api.into_config().expect("no token file");
        assert_eq!(config.listen.port(), 9000);
        assert!(config.admin.is_some());
        let Command::Consumer(consumer) =
            parse_from(["bandvote", "--config", &file.arg(), "consumer"]).expect("parses").command
        else {
            panic!("consumer")
        };
        let pipelines = consumer.into_config().pipelines;
        assert!(pipelines.tally && !pipelines.log, "a list sets a list: {pipelines:?}");
        let Command::Load(load) = parse_from(["bandvote", "--config", &file.arg(), "load"]).expect("parses").command
        else {
            panic!("load")
        };
        assert!(load.json, "a boolean sets a switch");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_all_refused_by_name() {
        let file = File::new(
            "colour = \"blue\"\n[up]\nlisen = \"127.0.0.1:1\"\nlisten = { port = 1 }\ndata-dir = \"x\"\n[upp]\nx = 1\n",
        );
        let error = parse_from(["bandvote", "--config", &file.arg(), "up"]).expect_err("refused").to_string();
        for expected in
            ["unknown key `colour` in the top level", "unknown key `lisen` in [up]", "`listen` in [up]", "[upp]"]
        {
            assert!(error.contains(expected), "{expected:?} in {error}");
        }
        assert!(!error.contains("`data-dir`"), "a valid key is no error: {error}");
    }

    #[test]
    fn a_missing_or_malformed_file_is_an_error() {
        let missing = parse_from(["bandvote", "--config", "/nonexistent/bandvote.toml", "up"]).expect_err("refused");
        assert!(missing.to_string().contains("/nonexistent/bandvote.toml"), "{missing}");
        let file = File::new("[up\nlisten = 1");
        let malformed = parse_from(["bandvote", "--config", &file.arg(), "up"]).expect_err("refused");
        assert!(malformed.to_string().contains("is not valid"), "{malformed}");
    }
}
