//! The optional TOML config file (`--config FILE` or `SOTTO_CONFIG`).
//!
//! Keys are the long option names, with `-` or `_`
//! (`chat-port = 12345`, `allowed_origin = ["https://chat.example"]`). The
//! file's values become the options' defaults before clap parses, so the
//! precedence falls out of clap itself: flag > environment > file >
//! built-in default. `--print-config` shows the result and where each
//! value came from, with secrets masked.

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use std::ffi::OsString;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Options that cannot come from the file itself.
const NOT_IN_FILE: &[&str] = &["config", "print_config", "help", "version"];

/// Options whose default is another option's value: (option, the option
/// it follows, what the default is). `--print-config` shows the value
/// they get rather than "unset".
const FOLLOWS: &[(&str, &str, &str)] = &[("dtls_port", "chat_port", "the chat port's number")];

/// The file named by `--config`/`--config=` in `args`, else `SOTTO_CONFIG`.
pub fn path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("SOTTO_CONFIG").map(PathBuf::from)
}

/// Sets the `serve` options' defaults from the file at `path`.
pub fn apply(cmd: Command, path: &Path) -> Result<Command, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or("invalid TOML").to_owned();
        format!("config file {} is not valid TOML: {first}", path.display())
    })?;
    let serve = cmd
        .find_subcommand("serve")
        .ok_or("internal: no serve command")?;
    let mut defaults: Vec<(String, Vec<String>)> = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let found = serve.get_arguments().find(|a| {
            a.get_long() == Some(long.as_str()) || a.get_id() == key.replace('-', "_").as_str()
        });
        let Some(id) = found.map(|a| a.get_id().to_string()) else {
            return Err(format!(
                "config file {}: unknown option {key:?}",
                path.display()
            ));
        };
        if NOT_IN_FILE.contains(&id.as_str()) {
            return Err(format!(
                "config file {}: unknown option {key:?}",
                path.display()
            ));
        }
        let values = strings(value).ok_or_else(|| {
            format!(
                "config file {}: {key} must be a string, number, boolean or list of those",
                path.display()
            )
        })?;
        defaults.push((id, values));
    }
    Ok(cmd.mut_subcommand("serve", move |mut sc| {
        for (id, values) in defaults {
            sc = sc.mut_arg(id, |a| {
                a.default_values(values.into_iter().map(clap::builder::OsStr::from))
            });
        }
        sc
    }))
}

fn strings(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Integer(i) => Some(vec![i.to_string()]),
        toml::Value::Float(f) => Some(vec![f.to_string()]),
        toml::Value::Boolean(b) => Some(vec![b.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| strings(i).and_then(|v| v.into_iter().next()))
            .collect(),
        _ => None,
    }
}

/// The effective `serve` options as TOML (usable as a config file), each
/// with where it came from.
pub fn describe(serve: &Command, matches: &ArgMatches) -> String {
    let from_file = file_ids(serve, matches);
    let mut out = String::new();
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_IN_FILE.contains(&id) {
            continue;
        }
        let key = arg
            .get_long()
            .map_or_else(|| id.replace('_', "-"), str::to_owned);
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "command line",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) if from_file.iter().any(|f| f == id) => "config file",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| mask(id, &s.to_string_lossy())).collect())
            .unwrap_or_default();
        let _ = match values.as_slice() {
            [] => match followed(id, matches) {
                Some((value, why)) => writeln!(out, "{key} = {value}  # default: {why}"),
                None => writeln!(out, "# {key} = (unset)"),
            },
            [one] if !matches!(arg.get_action(), clap::ArgAction::Append) => {
                writeln!(out, "{key} = {}  # {source}", toml_value(one))
            }
            many => {
                let list: Vec<String> = many.iter().map(|v| toml_value(v)).collect();
                writeln!(out, "{key} = [{}]  # {source}", list.join(", "))
            }
        };
    }
    out
}

/// The value an unset option in [`FOLLOWS`] takes, and why.
fn followed(id: &str, matches: &ArgMatches) -> Option<(String, &'static str)> {
    let (_, other, why) = FOLLOWS.iter().find(|(follower, _, _)| *follower == id)?;
    let value = matches.get_raw(other)?.next()?;
    Some((value.to_string_lossy().into_owned(), why))
}

/// Ids of the options the config file set.
fn file_ids(serve: &Command, matches: &ArgMatches) -> Vec<String> {
    let Some(path) = matches.get_one::<PathBuf>("config") else {
        return Vec::new();
    };
    let table: toml::Table = match std::fs::read_to_string(path).map(|t| t.parse()) {
        Ok(Ok(t)) => t,
        _ => return Vec::new(),
    };
    table
        .keys()
        .filter_map(|key| {
            let long = key.replace('_', "-");
            serve
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .map(|a| a.get_id().to_string())
        })
        .collect()
}

fn toml_value(v: &str) -> String {
    if v == "true" || v == "false" || v.parse::<i64>().is_ok() {
        v.to_owned()
    } else {
        toml::Value::String(v.to_owned()).to_string()
    }
}

/// Hides secrets: the metrics token whole, passwords in URLs
/// (`postgres://user:secret@host` → `user:***@`).
fn mask(id: &str, value: &str) -> String {
    if id == "metrics_token" {
        return "***".to_owned();
    }
    if id != "database" {
        return value.to_owned();
    }
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return value.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords() {
        assert_eq!(
            mask("database", "postgres://u:pw@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(mask("database", "sotto.db"), "sotto.db");
        assert_eq!(mask("listen", "a:b@c"), "a:b@c");
        assert_eq!(mask("metrics_token", "s3cret"), "***");
    }

    #[test]
    fn finds_the_path() {
        let args: Vec<OsString> = ["sotto", "serve", "--config", "x.toml"]
            .map(OsString::from)
            .into();
        assert_eq!(path(&args), Some(PathBuf::from("x.toml")));
        let args: Vec<OsString> = ["sotto", "serve", "--config=y.toml"]
            .map(OsString::from)
            .into();
        assert_eq!(path(&args), Some(PathBuf::from("y.toml")));
    }
}
