//! Top-level `include`: other compose files whose services, networks, volumes, secrets and
//! configs join the project, as compose-go v2's `ApplyInclude` (Docker Compose v2.40.3) joins them.
//!
//! Each included file is read as a project of its own (its own `extends` and `include`, its
//! relative paths resolved against its project directory, its `.env`), then imported; its `name`
//! and anything else are left behind. An entry with several paths merges them first, as `-f`
//! files merge (`compose::merge`). Normalising what was imported belongs to
//! `compose::project`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_serde::{Mapping, Value};

use super::node::Node;
use super::{Error, Sources, merge, normalise_path, read_dotenv, relocate};

/// The top-level sections an included file contributes.
const IMPORTED: [&str; 5] = ["services", "networks", "volumes", "secrets", "configs"];

/// Imports every file `document`'s `include` names into it and removes the `include` key.
/// `dir` is where the paths of `include` resolve, `including` the files that include `file`.
pub fn apply(
    document: &mut Value,
    file: &Path,
    dir: &Path,
    environment: &BTreeMap<String, String>,
    sources: &mut Sources,
    including: &[PathBuf],
) -> Result<(), Error> {
    let Value::Mapping(mapping) = document else {
        return Ok(());
    };
    let Some(entries) = mapping.shift_remove("include") else {
        return Ok(());
    };
    let node = Node::new(file, "include", &entries);
    if node.is_null() {
        return Ok(());
    }
    let mut chain = including.to_vec();
    chain.push(file.to_path_buf());
    for item in node.items()? {
        let include = Include::parse(&item, dir)?;
        for path in &include.paths {
            if let Some(start) = chain.iter().position(|file| file == path) {
                let cycle: Vec<String> = chain[start..]
                    .iter()
                    .chain([path])
                    .map(|file| file.display().to_string())
                    .collect();
                return Err(item.invalid(format!(
                    "include cycle detected: {}",
                    cycle.join(" include ")
                )));
            }
            if !path.is_file() {
                return Err(item.invalid(format!("{} is not a file", path.display())));
            }
        }
        let environment = include.environment(environment, sources)?;
        // Several paths are merged as `-f` files are: each read on its own (its own `extends`
        // and `include`), then merged over the ones before it, once its `!reset` and
        // `!override` paths are cleared from them (compose-go's `loadYamlFile`).
        // Their relative paths all resolve against the project directory, once merged.
        let mut merged = Mapping::new();
        for path in &include.paths {
            let (document, resets) = super::document(
                path,
                &include.project_directory,
                &environment,
                sources,
                &chain,
            )?;
            sources.read(path);
            resets.clear(&mut merged);
            if let Value::Mapping(document) = document {
                merged = merge::document(merged, document);
            }
        }
        let mut imported = Value::Mapping(merged);
        relocate(&mut imported, &include.project_directory, true);
        import(mapping, imported, &item, &include.paths)?;
    }
    Ok(())
}

/// One entry of `include`, its paths absolute.
struct Include {
    /// The file to include, then any that override it; never empty.
    paths: Vec<PathBuf>,
    /// Where the included files' relative paths resolve: `project_directory`, else the first
    /// file's directory.
    project_directory: PathBuf,
    /// `env_file`, relative to the including file's directory; `None` reads the project
    /// directory's `.env` if there is one.
    env_files: Option<Vec<PathBuf>>,
}

impl Include {
    /// The short syntax (a path) or the long one (`path`, `project_directory`, `env_file`).
    fn parse(node: &Node, dir: &Path) -> Result<Include, Error> {
        let absolute = |path: String| normalise_path(&dir.join(path));
        let Ok(entries) = node.entries() else {
            let path = absolute(node.string()?);
            return Ok(Include::new(vec![path], None, None));
        };
        let (mut paths, mut project_directory, mut env_files) = (Vec::new(), None, None);
        for (key, value) in entries {
            match key.as_str() {
                "path" => paths = value.string_or_strings()?,
                "project_directory" => project_directory = Some(absolute(value.string()?)),
                "env_file" => {
                    let files = value.string_or_strings()?.into_iter();
                    env_files = Some(files.map(absolute).collect());
                }
                _ => {
                    return Err(value.invalid(format!("additional properties '{key}' not allowed")));
                }
            }
        }
        if paths.is_empty() {
            return Err(node.invalid("needs a path"));
        }
        let paths = paths.into_iter().map(absolute).collect();
        Ok(Include::new(paths, project_directory, env_files))
    }

    fn new(
        paths: Vec<PathBuf>,
        project_directory: Option<PathBuf>,
        env_files: Option<Vec<PathBuf>>,
    ) -> Include {
        let project_directory = project_directory.unwrap_or_else(|| {
            let first = paths.first().and_then(|path| path.parent());
            first.unwrap_or(Path::new("/")).to_path_buf()
        });
        Include {
            paths,
            project_directory,
            env_files,
        }
    }

    /// The including project's variables, and those of the env files for names it leaves
    /// unset (compose-go's `Mapping.Merge`).
    fn environment(
        &self,
        environment: &BTreeMap<String, String>,
        sources: &mut Sources,
    ) -> Result<BTreeMap<String, String>, Error> {
        let env_files = match &self.env_files {
            Some(files) => files.clone(),
            None => {
                let dotenv = self.project_directory.join(".env");
                if dotenv.is_file() {
                    vec![dotenv]
                } else {
                    Vec::new()
                }
            }
        };
        let mut from_files = BTreeMap::new();
        for file in env_files
            .iter()
            .filter(|file| *file != Path::new("/dev/null"))
        {
            let mut lookup = |name: &str| environment.get(name).cloned();
            from_files.extend(read_dotenv(file, &mut lookup, &mut sources.sealed)?);
            sources.read(file);
        }
        let mut merged = environment.clone();
        for (name, value) in from_files {
            merged.entry(name).or_insert(value);
        }
        Ok(merged)
    }
}

/// Adds the imported files' resources to `target`. A name both define is an error unless the
/// definitions are equal ("conflicts with imported resource", as Compose says).
fn import(
    target: &mut Mapping,
    imported: Value,
    node: &Node,
    paths: &[PathBuf],
) -> Result<(), Error> {
    let Value::Mapping(mut imported) = imported else {
        return Ok(());
    };
    for section in IMPORTED {
        let Some(Value::Mapping(entries)) = imported.shift_remove(section) else {
            continue;
        };
        let slot = target
            .entry(section.into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if slot.is_null() {
            *slot = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(existing) = slot else {
            continue;
        };
        for (name, value) in entries {
            if existing.get(&name).is_some_and(|known| *known != value) {
                let name = name.as_str().unwrap_or_default();
                let paths: Vec<String> = paths
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect();
                return Err(node.invalid(format!(
                    "{section}.{name} conflicts with imported resource from {}",
                    paths.join(", ")
                )));
            }
            existing.insert(name, value);
        }
    }
    Ok(())
}
