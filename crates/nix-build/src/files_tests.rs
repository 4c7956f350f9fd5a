use super::*;

struct Tree {
    _dir: tempfile::TempDir,
    root: Utf8PathBuf,
}

impl Tree {
    fn new(files: &[(&str, &str)]) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }
        Tree { _dir: dir, root }
    }

    fn p(&self, rel: &str) -> Utf8PathBuf {
        self.root.join(rel)
    }

    fn rel(&self, set: &FileSet) -> Vec<String> {
        set.entries
            .iter()
            .map(|e| set.relative(e).to_string())
            .collect()
    }
}

#[test]
fn own_files_and_imports_only() {
    let t = Tree::new(&[
        (
            "hosts/pi1/configuration.nix",
            "{ ... }: { imports = [ ./hardware.nix ../../common.nix ]; }",
        ),
        ("hosts/pi1/hardware.nix", "{ }"),
        ("hosts/pi1/notes.txt", "not read"),
        (
            "hosts/pi2/configuration.nix",
            "{ imports = [ ../../common.nix ]; }",
        ),
        (
            "common.nix",
            "{ environment.etc.motd.source = ./files/motd; }",
        ),
        ("files/motd", "hi"),
        ("files/other", "not named"),
        ("secret.key", "untracked secret"),
    ]);
    let others = [t.p("hosts/pi2/configuration.nix")];
    let set = discover(&t.p("hosts/pi1/configuration.nix"), &t.root, &others).unwrap();
    assert_eq!(set.root, t.root);
    assert_eq!(
        t.rel(&set),
        [
            "common.nix",
            "files",
            "files/motd",
            "hosts",
            "hosts/pi1",
            "hosts/pi1/configuration.nix",
            "hosts/pi1/hardware.nix"
        ]
    );
    assert!(set.outside.is_empty() && set.not_included.is_empty());
}

#[test]
fn a_folder_goes_whole_without_git_results_and_other_hosts() {
    let t = Tree::new(&[
        (
            "configuration.nix",
            "{ imports = [ ./modules ]; x = builtins.readDir ./hosts; }",
        ),
        ("modules/default.nix", "{ imports = [ ./a.nix ]; }"),
        ("modules/a.nix", "{ y = ../extra.nix; }"),
        ("modules/.git/HEAD", "ref"),
        ("modules/result-doc", "x"),
        ("modules/data/blob.bin", "bin"),
        ("extra.nix", "{ }"),
        ("hosts/shared.nix", "{ }"),
        ("hosts/nas/configuration.nix", "{ }"),
        ("hosts/nas/hardware.nix", "{ }"),
        ("hosts/web.nix", "{ }"),
        (".fleet/gcroots/x", ""),
    ]);
    let others = [t.p("hosts/nas/configuration.nix"), t.p("hosts/web.nix")];
    let set = discover(&t.p("configuration.nix"), &t.root, &others).unwrap();
    assert_eq!(
        t.rel(&set),
        [
            "configuration.nix",
            "extra.nix",
            "hosts",
            "hosts/shared.nix",
            "modules",
            "modules/a.nix",
            "modules/data",
            "modules/data/blob.bin",
            "modules/default.nix",
        ]
    );
}

#[test]
fn outside_files_widen_the_root_absolute_ones_are_reported() {
    let t = Tree::new(&[
        (
            "fleet/hosts/pi1.nix",
            "{ imports = [ ../../shared/base.nix /etc/nixos/hardware-configuration.nix ];\n  k = ~/keys; }",
        ),
        ("shared/base.nix", "{ }"),
    ]);
    let set = discover(&t.p("fleet/hosts/pi1.nix"), &t.p("fleet"), &[]).unwrap();
    assert_eq!(set.root, t.root);
    assert_eq!(set.outside, [t.p("shared/base.nix")]);
    assert_eq!(
        t.rel(&set),
        [
            "fleet",
            "fleet/hosts",
            "fleet/hosts/pi1.nix",
            "shared",
            "shared/base.nix"
        ]
    );
    let lits: Vec<(&str, usize)> = set
        .not_included
        .iter()
        .map(|n| (n.literal.as_str(), n.line))
        .collect();
    assert_eq!(
        lits,
        [("/etc/nixos/hardware-configuration.nix", 1), ("~/keys", 2)]
    );
}

#[test]
fn search_paths_and_interpolated_paths() {
    let t = Tree::new(&[
        (
            "c.nix",
            "{ name, ... }: {\n imports = [ <nixpkgs/nixos/modules/x.nix> <nixos-hardware/raspberry-pi/4> ./parts/${name}.nix ];\n}",
        ),
        ("parts/a.nix", "{ }"),
        ("parts/b.nix", "{ z = ./b.conf; }"),
        ("parts/b.conf", ""),
    ]);
    let set = discover(&t.p("c.nix"), &t.root, &[]).unwrap();
    let names: Vec<(&str, usize)> = set
        .search_paths
        .iter()
        .map(|s| (s.name.as_str(), s.line))
        .collect();
    assert_eq!(names, [("nixpkgs", 2), ("nixos-hardware", 2)]);
    assert_eq!(
        t.rel(&set),
        [
            "c.nix",
            "parts",
            "parts/a.nix",
            "parts/b.conf",
            "parts/b.nix"
        ]
    );
}

#[test]
fn missing_files_are_left_to_nix_and_cycles_end() {
    let t = Tree::new(&[
        ("a.nix", "{ imports = [ ./b.nix ./missing.nix ]; }"),
        ("b.nix", "{ imports = [ ./a.nix ]; }"),
    ]);
    let set = discover(&t.p("a.nix"), &t.root, &[]).unwrap();
    assert_eq!(t.rel(&set), ["a.nix", "b.nix"]);
}

#[test]
fn an_unreadable_configuration_is_an_error() {
    let t = Tree::new(&[]);
    let err = discover(&t.p("nope.nix"), &t.root, &[]).unwrap_err();
    assert!(err.to_string().contains("nope.nix"), "{err}");
}
