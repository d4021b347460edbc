//! `extends`: a service built on another one, of the same file or of another file, merged (by
//! `compose::merge`) as the Compose Specification's "Merge and override" section says and
//! compose-go v2 (Docker Compose v2.40.3) does it.
//!
//! It works on the interpolated YAML of one compose file, before any service is normalised, so
//! that the merged entry is read as if it had been written out. Which keys of the merged entry
//! stackhook supports, and the uniqueness of list entries (ports, volumes, …), belong to
//! `compose::service`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_serde::{Mapping, Value};

use super::merge::{self, Resets};
use super::node::Node;
use super::{Error, Sources, normalise_path, relocate};

/// Replaces every service of `document` that has `extends` by its merge with the service it
/// extends. `dir` is where the file's relative paths (`extends.file` among them) resolve;
/// `resets` are the file's `!reset` and `!override` tags.
pub fn apply(
    document: &mut Value,
    file: &Path,
    dir: &Path,
    resets: &Resets,
    environment: &BTreeMap<String, String>,
    sources: &mut Sources,
) -> Result<(), Error> {
    let Some(Value::Mapping(services)) = document.get("services") else {
        return Ok(());
    };
    let origin = Origin {
        file: file.to_path_buf(),
        dir: dir.to_path_buf(),
        services: services.clone(),
        resets: resets.clone(),
    };
    let mut loader = Loader {
        environment,
        sources,
        files: BTreeMap::new(),
    };
    let mut merged = Vec::new();
    for (name, service) in &origin.services {
        let (Some(name), Some(_)) = (name.as_str(), service.get("extends")) else {
            continue;
        };
        let service = extended(&origin, name, &mut Vec::new(), &mut loader)?;
        merged.push((name.to_owned(), service));
    }
    if let Some(Value::Mapping(services)) = document.get_mut("services") {
        for (name, service) in merged {
            services.insert(Value::String(name), service);
        }
    }
    Ok(())
}

/// The services of one compose file, where its relative paths resolve, and its tags.
#[derive(Clone)]
struct Origin {
    file: PathBuf,
    dir: PathBuf,
    services: Mapping,
    resets: Resets,
}

/// Reads the other files that `extends.file` names, each once.
struct Loader<'a> {
    environment: &'a BTreeMap<String, String>,
    sources: &'a mut Sources,
    files: BTreeMap<PathBuf, Origin>,
}

impl Loader<'_> {
    /// The services of another compose file: interpolated with the same variables, their
    /// relative paths made absolute against that file's directory, as compose-go's
    /// `getExtendsBaseFromFile` does. Nothing else of that file joins the project.
    fn load(&mut self, file: &Path, node: &Node) -> Result<Origin, Error> {
        if let Some(origin) = self.files.get(file) {
            return Ok(origin.clone());
        }
        // Named from the extending service, which the reader can find and fix.
        let text = super::read(file).map_err(|error| node.invalid(error))?;
        let mut document = super::parse(file, &text)?;
        let resets = Resets::take(&mut document);
        super::interpolate_document(
            file,
            &mut document,
            self.environment,
            &mut self.sources.variables,
        )?;
        self.sources.read(file);
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        relocate(&mut document, &dir, false);
        let services = match document.get("services") {
            Some(Value::Mapping(services)) => services.clone(),
            _ => {
                return Err(node.invalid(format!(
                    "cannot extend from {}: it has no services section",
                    file.display()
                )));
            }
        };
        let origin = Origin {
            file: file.to_path_buf(),
            dir,
            services,
            resets,
        };
        self.files.insert(file.to_path_buf(), origin.clone());
        Ok(origin)
    }
}

/// The service `name` of `origin` with its `extends` chain merged in, base first. `chain` holds
/// the services being extended, to report a cycle instead of recursing forever.
fn extended(
    origin: &Origin,
    name: &str,
    chain: &mut Vec<(PathBuf, String)>,
    loader: &mut Loader,
) -> Result<Value, Error> {
    let service = origin.services.get(name).cloned().unwrap_or(Value::Null);
    let Value::Mapping(mut service) = service else {
        return Ok(service);
    };
    let Some(extends) = service.shift_remove("extends") else {
        return Ok(Value::Mapping(service));
    };
    chain.push((origin.file.clone(), name.to_owned()));
    let at = format!("services.{name}.extends");
    let node = Node::new(&origin.file, at, &extends);
    let (reference, other) = match node.get("service") {
        Some(reference) => {
            let other = node.get("file").map(|file| file.string()).transpose()?;
            (reference.string()?, other)
        }
        None if node.entries().is_ok() => return Err(node.invalid("needs a service")),
        None => (node.string()?, None),
    };
    let base_origin = match &other {
        Some(path) => loader.load(&normalise_path(&origin.dir.join(path)), &node)?,
        None => origin.clone(),
    };
    if !base_origin.services.contains_key(reference.as_str()) {
        let place = match &other {
            Some(path) => format!(" in {path}"),
            None => String::new(),
        };
        return Err(node.invalid(format!(
            "cannot extend service {name:?}: service {reference:?} not found{place}"
        )));
    }
    let link = (base_origin.file.clone(), reference.clone());
    if chain.contains(&link) {
        let mut steps = chain
            .iter()
            .chain([&link])
            .map(|(file, service)| format!("{service} in {}", file.display()));
        let first = steps.next().unwrap_or_default();
        let rest: Vec<String> = steps.map(|step| format!("extends {step}")).collect();
        return Err(node.invalid(format!("circular reference: {first} {}", rest.join(" "))));
    }
    let base = extended(&base_origin, &reference, chain, loader)?;
    chain.pop();
    match base {
        // The extending file's tags clear their paths from the base first, as compose-go applies
        // that file's `ResetProcessor` to the base before `ExtendService`. compose-go skips this
        // for the middle of a chain in one file when it happens to reach the end of the chain
        // first (Go's map order), so `docker compose config` shows either result from run to
        // run; stackhook always clears, as the specification says.
        Value::Mapping(mut base) => {
            origin.resets.clear_service(name, &mut base);
            Ok(Value::Mapping(merge::service(base, service)))
        }
        _ => Ok(Value::Mapping(service)),
    }
}
