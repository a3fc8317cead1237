//! The `--config` TOML file, applied to the `serve` options generically: for every argument of
//! the `serve` command that came neither from the command line nor from its environment
//! variable, the file's value, if the file has the option's key, is used. Nothing here names
//! an option: keys, what each key accepts and how its value is checked all come from the
//! declaration in `serve.rs`.
//!
//! - The key of an option is its id (the flag without `--`, `-` as `_`); an id starting with
//!   `backup_` is the rest of it in the `[backup]` table (`--backup-keep-daily` is
//!   `[backup] keep_daily`). An option whose key the rule does not give declares it
//!   ([`super::serve::FileKey::Named`]), or declares that the file cannot set it
//!   ([`super::serve::FileKey::None`]).
//! - A value's TOML type follows the option's type: a string for text (a path, an address, a
//!   name), an integer for a number, either for a byte size (`4194304`, `"4MiB"`), `true` or
//!   `false` for a switch, an array of strings (or one string, split as the flag splits it)
//!   for a repeatable option. It is handed to the flag's own parser as the text that would
//!   follow the flag, so it is checked as the flag's value is.
//! - A key the file cannot hold, a value of the wrong TOML type and a value the flag refuses
//!   are [`ConfigError::ParseFile`] errors pointing at the place in the file, as the TOML
//!   crate writes them.

use std::any::TypeId;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Unexpected, Visitor};

use super::serve::{ByteSize, ServeOptions};
use super::ConfigError;

/// Applies the file at `path` to `options`, which `given` (the parse they came from) says the
/// source of. Options given on the command line or in the environment keep their value.
pub(super) fn apply(
    options: &mut ServeOptions,
    given: &ArgMatches,
    path: &Path,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let bad_file = |message: String| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: message.trim_end().to_owned(),
    };
    let command = ServeOptions::augment_args(clap::Command::new("serve"));
    let file_options = file_options(&command);
    let values =
        read(&text, &file_options, &file_command(&command)).map_err(|e| bad_file(e.to_string()))?;
    for (index, value) in values {
        if !given_by_operator(given, &file_options[index]) {
            options
                .update_from_arg_matches(&value)
                .map_err(|e| bad_file(e.to_string()))?;
        }
    }
    Ok(())
}

/// Every option the file can set, in the order of the declaration.
pub(super) fn file_options(command: &clap::Command) -> Vec<FileOption> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let id = arg.get_id().as_str();
            let &(id, key) = ServeOptions::FILE_KEYS.iter().find(|(i, _)| *i == id)?;
            let (table, key) = key.place(id)?;
            Some(FileOption {
                id,
                table,
                key,
                long: arg.get_long().unwrap_or(id).to_owned(),
                shape: Shape::of(arg),
            })
        })
        .collect()
}

/// The values `text` gives, each as the index of its option in `options` and the option
/// parsed by `file_command` from the text that would follow its flag.
pub(super) fn read(
    text: &str,
    options: &[FileOption],
    file_command: &clap::Command,
) -> Result<Vec<(usize, ArgMatches)>, toml::de::Error> {
    TableSeed {
        options,
        command: file_command,
        table: None,
    }
    .deserialize(toml::Deserializer::parse(text)?)
}

/// The `serve` command as it parses one option of the file: no environment variables, no
/// defaults, no splitting (a list arrives as separate values) and switches that take
/// `true`/`false`, so the parse holds exactly what the file said.
pub(super) fn file_command(command: &clap::Command) -> clap::Command {
    command.clone().no_binary_name(true).mut_args(|arg| {
        let arg = arg
            .env(None)
            .default_value(None)
            .value_delimiter(None::<char>);
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            arg.action(ArgAction::Set)
        } else {
            arg
        }
    })
}

/// Whether the operator gave the option on the command line or in the environment, which beats
/// the file. A switch counts only when on: one that is off (`RAFTLITE_NODE_VERIFY_CLIENT=false`)
/// leaves the file's `true` standing, as raftlite has always read it (a switch turns on).
fn given_by_operator(given: &ArgMatches, option: &FileOption) -> bool {
    match given.value_source(option.id) {
        Some(ValueSource::CommandLine | ValueSource::EnvVariable) => {
            option.shape != Shape::Switch || given.get_flag(option.id)
        }
        _ => false,
    }
}

/// An option the file can set.
#[derive(Debug, Clone)]
pub(super) struct FileOption {
    /// The argument's id.
    pub(super) id: &'static str,
    /// `None`: a top-level key.
    pub(super) table: Option<&'static str>,
    pub(super) key: &'static str,
    /// The flag, without `--`.
    long: String,
    pub(super) shape: Shape,
}

#[cfg(test)]
impl FileOption {
    /// `key` or `table.key`.
    pub(super) fn path(&self) -> String {
        match self.table {
            Some(table) => format!("{table}.{}", self.key),
            None => self.key.to_owned(),
        }
    }
}

/// What kind of TOML value an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// A flag without a value: `true` or `false`.
    Switch,
    /// A repeatable option: an array of strings, or one string split as the flag splits it.
    List { delimiter: Option<char> },
    /// An option whose value is text (a path, an address, a name): a string.
    Text,
    /// A byte size: an integer or a string such as "4MiB".
    Bytes,
    /// Any other value (a number): an integer.
    Number,
}

impl Shape {
    fn of(arg: &Arg) -> Shape {
        let value_type = arg.get_value_parser().type_id();
        match arg.get_action() {
            ArgAction::SetTrue => Shape::Switch,
            ArgAction::Append => Shape::List {
                delimiter: arg.get_value_delimiter(),
            },
            _ if value_type == TypeId::of::<String>() || value_type == TypeId::of::<PathBuf>() => {
                Shape::Text
            }
            _ if value_type == TypeId::of::<ByteSize>() => Shape::Bytes,
            _ => Shape::Number,
        }
    }
}

/// A table of the file: the top level, or one of the tables options live in.
#[derive(Clone, Copy)]
struct TableSeed<'a> {
    options: &'a [FileOption],
    command: &'a clap::Command,
    table: Option<&'static str>,
}

impl TableSeed<'_> {
    /// The keys this table can hold (options and tables), for the message about one it cannot.
    fn expected(&self) -> String {
        let mut keys: Vec<&str> = Vec::new();
        for option in self.options {
            let key = match (self.table, option.table) {
                (Some(table), Some(own)) if own == table => option.key,
                (None, None) => option.key,
                (None, Some(table)) => table,
                _ => continue,
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl<'de> DeserializeSeed<'de> for TableSeed<'_> {
    type Value = Vec<(usize, ArgMatches)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TableSeed<'_> {
    type Value = Vec<(usize, ArgMatches)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.table {
            Some(table) => write!(f, "a table of {table} settings"),
            None => f.write_str("a table of settings"),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::new();
        while let Some(entry) = map.next_key_seed(KeySeed(self))? {
            match entry {
                Entry::Option(index) => {
                    let seed = ValueSeed {
                        option: &self.options[index],
                        command: self.command,
                    };
                    values.push((index, map.next_value_seed(seed)?));
                }
                Entry::Table(table) => values.extend(map.next_value_seed(TableSeed {
                    table: Some(table),
                    ..self
                })?),
            }
        }
        Ok(values)
    }
}

/// What a key of a table is.
enum Entry {
    /// The key of `options[index]`.
    Option(usize),
    /// A table of options.
    Table(&'static str),
}

struct KeySeed<'a>(TableSeed<'a>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Entry;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Entry, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Entry, E> {
        let table = self.0;
        if let Some(index) = table
            .options
            .iter()
            .position(|o| o.table == table.table && o.key == key)
        {
            return Ok(Entry::Option(index));
        }
        if table.table.is_none() {
            if let Some(own) = table
                .options
                .iter()
                .filter_map(|o| o.table)
                .find(|t| *t == key)
            {
                return Ok(Entry::Table(own));
            }
        }
        Err(E::custom(format!(
            "unknown field `{key}`, expected one of {}",
            table.expected()
        )))
    }
}

/// The value of one option.
struct ValueSeed<'a> {
    option: &'a FileOption,
    command: &'a clap::Command,
}

impl ValueSeed<'_> {
    /// The option parsed by its flag's parser from `values`, as if each followed the flag.
    fn parse<E: de::Error>(&self, values: &[String]) -> Result<ArgMatches, E> {
        let long = &self.option.long;
        let argv = values.iter().map(|v| format!("--{long}={v}"));
        self.command
            .clone()
            .try_get_matches_from(argv)
            .map_err(|e| {
                let reason = match std::error::Error::source(&e) {
                    Some(source) => source.to_string(),
                    // Clap's parsers of paths and the like refuse an empty value without one.
                    None if values.iter().any(String::is_empty) => "must not be empty".to_owned(),
                    None => e.kind().to_string(),
                };
                E::custom(format!(
                    "invalid value `{}` for --{long}: {reason}",
                    values.join(",")
                ))
            })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ArgMatches;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ArgMatches, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ArgMatches;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.option.shape {
            Shape::Switch => f.write_str("a boolean"),
            Shape::List {
                delimiter: Some(','),
            } => f.write_str("an array of strings or a comma-separated string"),
            Shape::List { delimiter: Some(d) } => {
                write!(f, "an array of strings or a string separated by {d:?}")
            }
            Shape::List { delimiter: None } => f.write_str("an array of strings"),
            Shape::Text => f.write_str("a string"),
            Shape::Bytes => f.write_str("a byte count: a number or a string such as \"4MiB\""),
            Shape::Number => f.write_str("a number"),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ArgMatches, E> {
        match self.option.shape {
            Shape::Switch => self.parse(&[v.to_string()]),
            _ => Err(E::invalid_type(Unexpected::Bool(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ArgMatches, E> {
        match self.option.shape {
            Shape::Number | Shape::Bytes => self.parse(&[v.to_string()]),
            _ => Err(E::invalid_type(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ArgMatches, E> {
        match self.option.shape {
            Shape::Number | Shape::Bytes => self.parse(&[v.to_string()]),
            _ => Err(E::invalid_type(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ArgMatches, E> {
        match self.option.shape {
            Shape::Text | Shape::Bytes => self.parse(&[v.to_owned()]),
            Shape::List { delimiter: Some(d) } => {
                self.parse(&v.split(d).map(str::to_owned).collect::<Vec<_>>())
            }
            Shape::List { delimiter: None } => self.parse(&[v.to_owned()]),
            Shape::Switch | Shape::Number => Err(E::invalid_type(Unexpected::Str(v), &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArgMatches, A::Error> {
        if !matches!(self.option.shape, Shape::List { .. }) {
            return Err(de::Error::invalid_type(Unexpected::Seq, &self));
        }
        let mut values = Vec::new();
        while let Some(value) = seq.next_element::<String>()? {
            values.push(value);
        }
        self.parse(&values)
    }
}
