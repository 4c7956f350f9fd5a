//! Evaluation: one `nix-instantiate` per batch, per-host fallback when a batch fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::BuildError;
use crate::expr::{batch_expression, ExprHost};
use crate::nix;
use crate::spec::{BuildEvent, BuildOptions};

/// The .drv and output paths of one evaluated host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Evaluated {
    /// The configuration's `nixpkgs.hostPlatform.system`, when it can be read.
    #[serde(default)]
    pub host_platform: Option<String>,
    /// The host reads `<nixos-config>` (`system.copySystemConfiguration`): evaluate it alone.
    #[serde(default)]
    pub alone: bool,
    pub toplevel: String,
    pub toplevel_out: String,
    pub package: String,
    pub package_out: String,
    /// A flake host's lock (not from the expression: from `nix flake metadata`).
    #[serde(skip)]
    pub flake: Option<crate::spec::FlakeLock>,
}

pub(crate) type EvalResult = Result<Evaluated, BuildError>;

/// Told each host's result (its index in the hosts given, the result) as soon as its batch
/// returned, before the other batches finish.
pub(crate) type OnResult<'a> = &'a (dyn Fn(usize, &EvalResult) + Sync);

/// Evaluate `hosts` (name, expression input) in bounded batches of hosts with the same search
/// path (one `nix-instantiate` has one); results keep the input order, and each is given to
/// `on_result` as soon as its batch returned.
pub(crate) async fn evaluate(
    hosts: Vec<(String, ExprHost)>,
    opts: &BuildOptions,
    on_result: OnResult<'_>,
) -> Vec<EvalResult> {
    let per_eval = opts.max_hosts_per_eval.max(1);
    let pool = Arc::new(Pool {
        permits: Semaphore::new(opts.max_parallel_evals.max(1)),
        per_process: AtomicUsize::new(per_eval),
    });
    let count = hosts.len();
    // Per search path, its hosts with their index in `hosts`.
    type Group = (Vec<(String, String)>, Vec<(usize, (String, ExprHost))>);
    let mut groups: Vec<Group> = Vec::new();
    for (i, h) in hosts.into_iter().enumerate() {
        match groups.iter_mut().find(|(k, _)| *k == h.1.search) {
            Some((_, g)) => g.push((i, h)),
            None => groups.push((h.1.search.clone(), vec![(i, h)])),
        }
    }
    let mut set = JoinSet::new();
    for (_, group) in groups {
        for chunk in group.chunks(per_eval) {
            let (indices, batch): (Vec<usize>, Vec<(String, ExprHost)>) =
                chunk.iter().cloned().unzip();
            let (pool, opts) = (pool.clone(), opts.clone());
            set.spawn(async move {
                let results = eval_batch(&batch, &pool, &opts).await;
                (indices, results)
            });
        }
    }
    let mut out: Vec<Option<EvalResult>> = (0..count).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((indices, results)) => {
                for (i, r) in indices.into_iter().zip(results) {
                    on_result(i, &r);
                    out[i] = Some(r);
                }
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(BuildError::Output {
                    command: "nix-instantiate".into(),
                    detail: "no result for host".into(),
                })
            })
        })
        .collect()
}

/// What the batches of one evaluation share: the process bound, and how many hosts one
/// process may evaluate, learnt from processes that went over the memory limit.
pub(crate) struct Pool {
    permits: Semaphore,
    per_process: AtomicUsize,
}

async fn eval_batch(
    batch: &[(String, ExprHost)],
    pool: &Pool,
    opts: &BuildOptions,
) -> Vec<EvalResult> {
    let names: Vec<String> = batch.iter().map(|(n, _)| n.clone()).collect();
    opts.emit(BuildEvent::EvalStarted {
        hosts: names.clone(),
    });
    let results = eval_split(batch, pool, opts).await;
    let failed = names
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| n.clone())
        .collect();
    opts.emit(BuildEvent::EvalFinished {
        hosts: names,
        failed,
    });
    results
}

type Results<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Vec<EvalResult>> + Send + 'a>>;

/// Evaluate a batch in one process. Over the memory limit: in two halves (and so on, down to
/// one host, whose error it then is), and later batches start at the smaller size, as
/// nix-eval-jobs restarts a worker that grew past its limit. On an error: each host alone, to
/// find which one it is.
fn eval_split<'a>(
    batch: &'a [(String, ExprHost)],
    pool: &'a Pool,
    opts: &'a BuildOptions,
) -> Results<'a> {
    Box::pin(async move {
        let size = pool.per_process.load(Ordering::Relaxed).max(1);
        if batch.len() > size {
            let (a, b) = batch.split_at(size.min(batch.len() / 2).max(1));
            let (mut a, b) = tokio::join!(eval_split(a, pool, opts), eval_split(b, pool, opts));
            a.extend(b);
            return a;
        }
        let whole = {
            let _permit = pool
                .permits
                .acquire()
                .await
                .expect("semaphore is never closed");
            eval_once(batch, opts).await
        };
        match whole {
            Ok(list) => {
                // Hosts that read `<nixos-config>` again, each with its own.
                let mut results = Vec::with_capacity(list.len());
                for (ev, host) in list.into_iter().zip(batch) {
                    if ev.alone {
                        results.push(eval_alone(host, pool, opts).await);
                    } else {
                        results.push(Ok(ev));
                    }
                }
                results
            }
            Err(BuildError::EvalMemory { limit, .. }) if batch.len() > 1 => {
                pool.per_process
                    .fetch_min(batch.len() / 2, Ordering::Relaxed);
                opts.emit(BuildEvent::EvalSplit {
                    hosts: batch.iter().map(|(n, _)| n.clone()).collect(),
                    limit,
                });
                eval_split(batch, pool, opts).await
            }
            Err(e) if batch.len() == 1 => vec![Err(e)],
            Err(_) => {
                // One host's error (a syntax error, a missing attribute) fails the whole
                // process: evaluate each host alone to find which, with its own error text.
                opts.emit(BuildEvent::EvalBatchFailed {
                    hosts: batch.iter().map(|(n, _)| n.clone()).collect(),
                });
                let mut results = Vec::with_capacity(batch.len());
                for host in batch {
                    results.push(eval_alone(host, pool, opts).await);
                }
                results
            }
        }
    })
}

/// One host in a process of its own.
async fn eval_alone(host: &(String, ExprHost), pool: &Pool, opts: &BuildOptions) -> EvalResult {
    let _permit = pool
        .permits
        .acquire()
        .await
        .expect("semaphore is never closed");
    eval_once(std::slice::from_ref(host), opts)
        .await
        .map(|mut v| v.remove(0))
}

/// Nix says `file 'NAME' was not found in the Nix search path`: say how fleet provides it.
fn with_search_path_hint(stderr: String) -> String {
    let marker = "was not found in the Nix search path";
    let Some(at) = stderr.find(marker) else {
        return stderr;
    };
    let name = stderr[..at]
        .rsplit("file '")
        .next()
        .and_then(|s| s.split('\'').next())
        .unwrap_or("NAME")
        .split('/')
        .next()
        .unwrap_or("NAME")
        .to_owned();
    format!("{stderr}\n{}", crate::error::search_path_help(&name))
}

/// One `nix-instantiate --eval` of a batch, with the batch's search path (and `nixos-config`
/// when it is one host).
async fn eval_once(
    batch: &[(String, ExprHost)],
    opts: &BuildOptions,
) -> Result<Vec<Evaluated>, BuildError> {
    let exprs: Vec<ExprHost> = batch.iter().map(|(_, h)| h.clone()).collect();
    let mut args = nix::isolated_eval_args();
    if let Some(first) = exprs.first() {
        for (name, path) in &first.search {
            args.push("-I".to_owned());
            args.push(format!("{name}={path}"));
        }
        if let [only] = exprs.as_slice() {
            args.push("-I".to_owned());
            args.push(format!("nixos-config={}", only.nixos_config()));
        }
    }
    // Instantiate the derivations (write the .drv files) while evaluating; the expression
    // (it can be long: a host's file list) on stdin.
    args.extend(["--json", "--read-write-mode", "-"].map(str::to_owned));
    let out = match nix::run_with_stdin_limited(
        "nix-instantiate",
        &args,
        &opts.nix_env,
        batch_expression(&exprs),
        opts.eval_max_memory,
    )
    .await?
    {
        nix::Limited::Done(out) => out,
        nix::Limited::OverMemory { rss } => {
            return Err(BuildError::EvalMemory {
                limit: opts.eval_max_memory.unwrap_or(0),
                rss,
            })
        }
    };
    if !out.success {
        let mut stderr = nix::excerpt(&out.stderr);
        if let [only] = exprs.as_slice() {
            // Errors name the store copy of the configuration; say which file it is.
            stderr = stderr.replace(&only.tree, &only.origin);
        }
        return Err(BuildError::Eval {
            stderr: with_search_path_hint(stderr),
        });
    }
    let list: Vec<Evaluated> =
        serde_json::from_str(out.stdout.trim()).map_err(|e| BuildError::Output {
            command: "nix-instantiate --eval".into(),
            detail: format!("{e}: {}", out.stdout.trim()),
        })?;
    if list.len() != batch.len() {
        return Err(BuildError::Output {
            command: "nix-instantiate --eval".into(),
            detail: format!("{} results for {} hosts", list.len(), batch.len()),
        });
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_search_path_entry_gets_the_key_to_add() {
        let stderr = "error: file 'nixos-hardware/raspberry-pi/4' was not found in the Nix search path (add it using $NIX_PATH or -I)".to_owned();
        let out = with_search_path_hint(stderr.clone());
        assert!(out.starts_with(&stderr));
        assert!(
            out.contains("add `nix-path = { nixos-hardware = \"path/to/nixos-hardware\" }`"),
            "{out}"
        );
        assert_eq!(with_search_path_hint("error: boom".into()), "error: boom");
    }
}
