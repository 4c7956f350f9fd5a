//! Which files a host's evaluation reads: its configuration file and, recursively, every file
//! or folder its Nix files name with a relative path literal (`./common.nix`, `../secrets`,
//! `./hosts/${name}.nix` → the folder `./hosts`). A folder named as a path goes whole (without
//! `.git`, `.fleet`, `.direnv`, `result*`, and other hosts' files). Absolute (`/etc/…`) and
//! home (`~/…`) paths are reported, not included: they are read on this machine. Search paths
//! (`<nixpkgs/…>`) are collected so the caller can check they are provided.
//!
//! Pure apart from reading files: no Nix is run. The deployment package's `config/` is exactly
//! [`FileSet::entries`], relative to [`FileSet::root`], and the host is evaluated from that copy,
//! so a file this module misses makes the evaluation fail instead of shipping an incomplete
//! package.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use camino::{Utf8Path, Utf8PathBuf};

/// A path literal that is not in the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotIncluded {
    /// The Nix file and line that names it.
    pub file: Utf8PathBuf,
    pub line: usize,
    /// The literal as written (`/etc/nixos/hardware-configuration.nix`, `~/keys`).
    pub literal: String,
}

/// A `<name/…>` lookup in a configuration's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPathUse {
    pub name: String,
    pub file: Utf8PathBuf,
    pub line: usize,
}

/// What a host's evaluation reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileSet {
    /// The folder the package's `config/` mirrors: fleet.toml's folder, or the closest folder
    /// above it that holds every included file (when a configuration reaches `../x`).
    pub root: Utf8PathBuf,
    /// Every included file and folder (absolute), folders before what they hold.
    pub entries: BTreeSet<Utf8PathBuf>,
    /// Absolute and `~` paths: read on this machine, not in the package.
    pub not_included: Vec<NotIncluded>,
    /// `<name>` lookups, in the order found.
    pub search_paths: Vec<SearchPathUse>,
    /// Files reached from outside fleet.toml's folder (included under `root`).
    pub outside: Vec<Utf8PathBuf>,
}

impl FileSet {
    /// The configuration's path relative to [`FileSet::root`].
    pub fn relative(&self, path: &Utf8Path) -> Utf8PathBuf {
        path.strip_prefix(&self.root)
            .map(Utf8Path::to_path_buf)
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Why the files of a configuration could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("reading {path}: {reason}")]
pub struct DiscoverError {
    pub path: Utf8PathBuf,
    pub reason: String,
}

/// Names never copied from a folder named as a path.
pub fn excluded_name(name: &str) -> bool {
    matches!(name, ".git" | ".fleet" | ".direnv") || name == "result" || name.starts_with("result-")
}

/// The files `config` reads. `fleet_dir` is fleet.toml's folder; `other_hosts` are the other
/// hosts' configuration files (absolute): they and their folders are left out of folders
/// named as a whole, unless a path literal names them.
pub fn discover(
    config: &Utf8Path,
    fleet_dir: &Utf8Path,
    other_hosts: &[Utf8PathBuf],
) -> Result<FileSet, DiscoverError> {
    let config = normalize(config);
    let fleet_dir = normalize(fleet_dir);
    let own_dir = config.parent().unwrap_or(Utf8Path::new("/")).to_path_buf();
    // Folders that belong to another host: the folder of its configuration file, unless this
    // host's configuration lives in it (or below it).
    let foreign_files: BTreeSet<Utf8PathBuf> = other_hosts
        .iter()
        .map(|p| normalize(p))
        .filter(|p| *p != config)
        .collect();
    let foreign_dirs: BTreeSet<Utf8PathBuf> = foreign_files
        .iter()
        .filter_map(|p| p.parent().map(Utf8Path::to_path_buf))
        .filter(|d| !own_dir.starts_with(d))
        .collect();

    let mut set = FileSet::default();
    let mut files: BTreeSet<Utf8PathBuf> = BTreeSet::new();
    let mut parsed: BTreeSet<Utf8PathBuf> = BTreeSet::new();
    let mut queue: VecDeque<Utf8PathBuf> = VecDeque::from([config.clone()]);
    files.insert(config.clone());
    while let Some(file) = queue.pop_front() {
        if !parsed.insert(file.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).map_err(|e| DiscoverError {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        let dir = file.parent().unwrap_or(Utf8Path::new("/"));
        for lit in path_literals(&text) {
            match lit.kind {
                LiteralKind::Search => set.search_paths.push(SearchPathUse {
                    name: lit.text.split('/').next().unwrap_or_default().to_owned(),
                    file: file.clone(),
                    line: lit.line,
                }),
                LiteralKind::Absolute | LiteralKind::Home => set.not_included.push(NotIncluded {
                    file: file.clone(),
                    line: lit.line,
                    literal: lit.text.clone(),
                }),
                LiteralKind::Relative => {
                    let target = normalize(&dir.join(&lit.text));
                    if target.components().any(|c| excluded_name(c.as_str())) {
                        continue;
                    }
                    let meta = match std::fs::symlink_metadata(&target) {
                        Ok(m) => m,
                        // Nix reports a missing file when (and if) it is read.
                        Err(_) => continue,
                    };
                    if meta.is_dir() {
                        // Named as a folder, or `./hosts/${name}.nix` (the folder `./hosts`).
                        walk_dir(
                            &target,
                            &foreign_files,
                            &foreign_dirs,
                            &mut files,
                            &mut queue,
                        )?;
                    } else {
                        if target.extension() == Some("nix") {
                            queue.push_back(target.clone());
                        }
                        files.insert(target);
                    }
                }
            }
        }
    }

    // The root: fleet.toml's folder, widened to hold everything included.
    let mut root = fleet_dir.clone();
    for f in &files {
        while !f.starts_with(&root) {
            match root.parent() {
                Some(p) => root = p.to_path_buf(),
                None => break,
            }
        }
        if !f.starts_with(&fleet_dir) {
            set.outside.push(f.clone());
        }
    }
    for f in &files {
        let mut p = f.parent();
        while let Some(d) = p {
            if d.as_str().len() <= root.as_str().len() {
                break;
            }
            set.entries.insert(d.to_path_buf());
            p = d.parent();
        }
        set.entries.insert(f.clone());
    }
    set.root = root;
    Ok(set)
}

/// Adds a folder's files (recursively, without excluded names and other hosts' files) and
/// queues its `.nix` files for parsing.
fn walk_dir(
    dir: &Utf8Path,
    foreign_files: &BTreeSet<Utf8PathBuf>,
    foreign_dirs: &BTreeSet<Utf8PathBuf>,
    files: &mut BTreeSet<Utf8PathBuf>,
    queue: &mut VecDeque<Utf8PathBuf>,
) -> Result<(), DiscoverError> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let read = d.read_dir_utf8().map_err(|e| DiscoverError {
            path: d.clone(),
            reason: e.to_string(),
        })?;
        // An empty folder is kept as a folder.
        files.insert(d.clone());
        let mut names = BTreeMap::new();
        for entry in read {
            let entry = entry.map_err(|e| DiscoverError {
                path: d.clone(),
                reason: e.to_string(),
            })?;
            names.insert(entry.file_name().to_owned(), entry.path().to_path_buf());
        }
        for (name, path) in names {
            if excluded_name(&name) || foreign_files.contains(&path) || foreign_dirs.contains(&path)
            {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else {
                if path.extension() == Some("nix") {
                    queue.push_back(path.clone());
                }
                files.insert(path);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiteralKind {
    Relative,
    Absolute,
    Home,
    Search,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Literal {
    kind: LiteralKind,
    /// Relative/absolute/home: the literal up to its first interpolation, trimmed to the last
    /// `/` when interpolated. Search: the name inside `<…>`.
    text: String,
    line: usize,
}

/// The path literals of a Nix file (syntax errors are left to Nix: what parses is scanned).
fn path_literals(text: &str) -> Vec<Literal> {
    use rnix::SyntaxKind as K;
    let root = rnix::Root::parse(text).syntax();
    let mut out = Vec::new();
    for node in root.descendants() {
        let kind = match node.kind() {
            K::NODE_PATH_REL => LiteralKind::Relative,
            K::NODE_PATH_ABS => LiteralKind::Absolute,
            K::NODE_PATH_HOME => LiteralKind::Home,
            K::NODE_PATH_SEARCH => LiteralKind::Search,
            _ => continue,
        };
        let line = text[..usize::from(node.text_range().start())]
            .matches('\n')
            .count()
            + 1;
        let mut literal = String::new();
        let mut interpolated = false;
        for child in node.children_with_tokens() {
            match child {
                rnix::NodeOrToken::Token(t) if !interpolated => literal.push_str(t.text()),
                rnix::NodeOrToken::Token(_) => {}
                rnix::NodeOrToken::Node(_) => interpolated = true,
            }
        }
        if kind == LiteralKind::Search {
            let name = literal.trim_start_matches('<').trim_end_matches('>');
            out.push(Literal {
                kind,
                text: name.to_owned(),
                line,
            });
            continue;
        }
        let text = if interpolated {
            match literal.rfind('/') {
                Some(i) => literal[..i.max(1)].to_owned(),
                None => ".".to_owned(),
            }
        } else {
            literal
        };
        out.push(Literal { kind, text, line });
    }
    out
}

/// Removes `.` and resolves `..` lexically, as Nix does for path literals.
pub(crate) fn normalize(path: &Utf8Path) -> Utf8PathBuf {
    use camino::Utf8Component;
    let mut out = Utf8PathBuf::new();
    for component in path.components() {
        match component {
            Utf8Component::CurDir => {}
            Utf8Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Utf8Component::Normal(_))) {
                    out.pop();
                }
            }
            other => out.push(other.as_str()),
        }
    }
    out
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
