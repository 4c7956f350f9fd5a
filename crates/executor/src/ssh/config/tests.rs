use std::path::{Path, PathBuf};

use super::matching::glob_match;
use super::*;

const TEXT: &str = "\
# global first
User\tglobaluser

Host web-* !web-excluded
    HostName %h.example.org
    Port=2222
\tIdentityFile ~/.ssh/web_key
    IdentityFile \"/keys/with space\"   # trailing comment

Host eqsyntax
  HostName = 10.0.0.1
  ProxyJump admin@bastion:2200,other

Match host 10.0.0.1 user globaluser
  Port 1

Match originalhost db* !localuser nobody
  User dbuser

Host db?
  HostName\t10.9.9.9
  ProxyJump none

Host *
  Port 22
  IdentityFile id_%r_%u
";

fn q<'a>(host: &'a str) -> HostQuery<'a> {
    HostQuery {
        host,
        local_user: "me",
        home: Path::new("/home/me"),
    }
}

fn cfg() -> SshConfig {
    SshConfig::parse(TEXT, "cfg", Path::new("/home/me")).unwrap()
}

#[test]
fn host_blocks_match_and_first_value_wins() {
    let web = cfg().host(&q("web-1")).unwrap();
    assert_eq!(web.host_name.as_deref(), Some("web-1.example.org"));
    assert_eq!(web.port, Some(2222));
    assert_eq!(web.user.as_deref(), Some("globaluser"));
    assert_eq!(
        web.identity_files,
        vec![
            PathBuf::from("/home/me/.ssh/web_key"),
            PathBuf::from("/keys/with space"),
            PathBuf::from("id_globaluser_me"),
        ]
    );
    let excluded = cfg().host(&q("web-excluded")).unwrap();
    assert_eq!(excluded.host_name, None);
    assert_eq!(excluded.port, Some(22));
    // Host patterns compare the name as given (OpenSSH: case-sensitive).
    assert_eq!(cfg().host(&q("WEB-1")).unwrap().host_name, None);
}

#[test]
fn match_host_sees_hostname_so_far() {
    let eq = cfg().host(&q("eqsyntax")).unwrap();
    assert_eq!(eq.host_name.as_deref(), Some("10.0.0.1"));
    assert_eq!(eq.port, Some(1), "Match host 10.0.0.1 user globaluser");
    assert_eq!(eq.proxy_jump.as_deref(), Some("admin@bastion:2200,other"));
    let db = cfg().host(&q("db1")).unwrap();
    assert_eq!(db.host_name.as_deref(), Some("10.9.9.9"));
    assert_eq!(
        db.user.as_deref(),
        Some("globaluser"),
        "User set globally first"
    );
    assert_eq!(db.proxy_jump, None);
    assert_eq!(cfg().host(&q("db12")).unwrap().host_name, None);
}

#[test]
fn match_user_localuser_negation_all() {
    let text = "Match user alice\n Port 1\nMatch !localuser me\n Port 2\nMatch localuser m? originalhost X,!y*\n Port 3\nMatch all\n Port 4\n";
    let c = SshConfig::parse(text, "t", Path::new("/h")).unwrap();
    assert_eq!(
        c.host(&q("x")).unwrap().port,
        Some(3),
        "originalhost is case-insensitive"
    );
    assert_eq!(
        c.host(&q("yx")).unwrap().port,
        Some(4),
        "!y* vetoes the list"
    );
    let mut alice = q("x");
    alice.local_user = "alice";
    assert_eq!(c.host(&alice).unwrap().port, Some(1));
}

#[test]
fn match_final_reparses_with_the_host_name() {
    let text = "Host a\n HostName B.example\nMatch final\nHost b.example\n User fin\nMatch canonical\n Port 5\nMatch !final host b.example\n IdentityFile first\n";
    let c = SshConfig::parse(text, "t", Path::new("/h")).unwrap();
    let s = c.host(&q("a")).unwrap();
    assert_eq!(s.host_name.as_deref(), Some("b.example"));
    assert_eq!(s.user.as_deref(), Some("fin"));
    assert_eq!(s.port, Some(5));
    assert_eq!(s.identity_files_as_written, vec!["first".to_string()]);
    // Without `Match final` there is no second pass: canonical never holds.
    let c = SshConfig::parse("Match canonical\n Port 5\n", "t", Path::new("/h")).unwrap();
    assert_eq!(c.host(&q("a")).unwrap().port, None);
}

#[test]
fn match_exec_runs_sh_with_tokens_and_is_skipped_after_a_failed_criterion() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let text = format!(
        "Match exec \"test %h = a.example -a %n = a\"\n Port 7\n\
         Match host nomatch exec \"touch {}\"\n Port 8\n\
         Host a\n HostName a.example\n",
        marker.display()
    );
    let c = SshConfig::parse(&text, "t", Path::new("/h")).unwrap();
    // The first Match runs before HostName is set: %h is still `a`.
    assert_eq!(c.host(&q("a")).unwrap().port, None);
    let text = "Host a\n HostName a.example\nMatch exec \"test %h = a.example -a %n = a -a %r = me\"\n Port 7\n";
    let c = SshConfig::parse(text, "t", Path::new("/h")).unwrap();
    assert_eq!(c.host(&q("a")).unwrap().port, Some(7));
    assert!(
        !marker.exists(),
        "exec after a failed criterion must not run"
    );
    let bad = SshConfig::parse("Match exec \"echo %Z\"\n", "t", Path::new("/h")).unwrap();
    let e = bad.host(&q("a")).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.message.contains("%Z"), "{e}");
}

#[test]
fn include_relative_glob_nested_and_inside_blocks() {
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
    std::fs::write(ssh.join("conf.d/10-a.conf"), "Host a\n Port 10\n").unwrap();
    std::fs::write(
        ssh.join("conf.d/20-b.conf"),
        "Include nested\nHost a\n User b\n",
    )
    .unwrap();
    std::fs::write(ssh.join("conf.d/.hidden"), "Host a\n Port 99\n").unwrap();
    std::fs::write(ssh.join("nested"), "Host a\n HostName nested.example\n").unwrap();
    std::fs::write(ssh.join("only-b"), "Port 11\nHost *\n User fromonly\n").unwrap();
    let text = "Include conf.d/*.conf missing-is-fine\nHost b\n Include only-b\nHost *\n Port 1\n";
    let c = SshConfig::parse(text, "t", home.path()).unwrap();
    let hq = |host| HostQuery {
        host,
        local_user: "me",
        home: home.path(),
    };
    let a = c.host(&hq("a")).unwrap();
    assert_eq!(
        (a.port, a.user.as_deref(), a.host_name.as_deref()),
        (Some(10), Some("b"), Some("nested.example"))
    );
    // Included from an inactive block: even its `Host *` never matches.
    assert_eq!(c.host(&hq("a")).unwrap().user.as_deref(), Some("b"));
    let b = c.host(&hq("b")).unwrap();
    assert_eq!((b.port, b.user.as_deref()), (Some(11), Some("fromonly")));

    std::fs::write(ssh.join("loop"), "Include loop\n").unwrap();
    let e = SshConfig::parse("Include loop\n", "t", home.path()).unwrap_err();
    assert!(e.message.contains("nested more than 16"), "{e}");
}

#[test]
fn errors_have_lines() {
    let h = Path::new("/h");
    let e = SshConfig::parse("Host a\n  Port banana\n", "f", h).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(SshConfig::parse("Host\n", "f", h).is_err());
    assert!(SshConfig::parse("IdentityFile \"open\n", "f", h).is_err());
    assert!(SshConfig::parse("Match\n", "f", h).is_err());
    assert!(SshConfig::parse("Match host\n", "f", h).is_err());
    assert!(SshConfig::parse("Match nonsense x\n", "f", h).is_err());
    assert!(SshConfig::parse("Match all host x\n", "f", h).is_err());
    let c = SshConfig::parse("Match localnetwork 10.0.0.0/8\n Port 3\n", "f", h).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.host(&q("a")).unwrap().port, None);
}

#[test]
fn identity_file_expansion() {
    std::env::set_var("FLEET_CFG_TEST_DIR", "/envdir");
    let text = "Host *\n User r\n Port 2200\n IdentityFile ~/k_%h_%n_%p_%r_%u_%%\n IdentityFile ${FLEET_CFG_TEST_DIR}/k\n IdentityFile ~/k_%h_%n_%p_%r_%u_%%\n";
    let c = SshConfig::parse(text, "t", Path::new("/home/me")).unwrap();
    let s = c.host(&q("Ab")).unwrap();
    assert_eq!(
        s.identity_files,
        vec![
            PathBuf::from("/home/me/k_ab_Ab_2200_r_me_%"),
            PathBuf::from("/envdir/k")
        ]
    );
    let c = SshConfig::parse("IdentityFile ${FLEET_CFG_UNSET_X}\n", "t", Path::new("/h")).unwrap();
    assert!(c.host(&q("a")).is_err());
}

#[test]
fn globs() {
    assert!(glob_match(b"*", b"anything"));
    assert!(glob_match(b"a*b*c", b"aXXbYYc"));
    assert!(!glob_match(b"a*b*c", b"aXXbYY"));
    assert!(glob_match(b"h?st", b"host"));
    assert!(!glob_match(b"h?st", b"HOST"));
    assert!(!glob_match(b"h?st", b"hoost"));
}

#[test]
fn proxy_jump_hops() {
    assert_eq!(
        parse_proxy_jump("admin@bastion:2200,[::1]:22,plain").unwrap(),
        vec![
            JumpHost {
                user: Some("admin".into()),
                host: "bastion".into(),
                port: Some(2200)
            },
            JumpHost {
                user: None,
                host: "::1".into(),
                port: Some(22)
            },
            JumpHost {
                user: None,
                host: "plain".into(),
                port: None
            },
        ]
    );
    assert!(parse_proxy_jump("a,,b").is_err());
}
