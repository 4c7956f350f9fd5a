//! Evaluation: one `nix-instantiate` per batch, per-host fallback when a batch fails.

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::BuildError;
use crate::expr::{batch_expression, ExprHost};
use crate::nix;
use crate::spec::{BuildEvent, BuildOptions};

/// The .drv and output paths of one evaluated host.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Evaluated {
    pub toplevel: String,
    pub toplevel_out: String,
    pub package: String,
    pub package_out: String,
}

pub(crate) type EvalResult = Result<Evaluated, BuildError>;

/// Evaluate `hosts` (name, expression input) in bounded batches; results keep the input order.
pub(crate) async fn evaluate(
    hosts: Vec<(String, ExprHost)>,
    opts: &BuildOptions,
) -> Vec<EvalResult> {
    let per_eval = opts.max_hosts_per_eval.max(1);
    let permits = Arc::new(Semaphore::new(opts.max_parallel_evals.max(1)));
    let hosts = Arc::new(hosts);
    let mut set = JoinSet::new();
    for start in (0..hosts.len()).step_by(per_eval) {
        let end = (start + per_eval).min(hosts.len());
        let (hosts, permits, opts) = (hosts.clone(), permits.clone(), opts.clone());
        set.spawn(async move {
            let batch = &hosts[start..end];
            let results = eval_batch(batch, &permits, &opts).await;
            (start, results)
        });
    }
    let mut out: Vec<Option<EvalResult>> = (0..hosts.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((start, results)) => {
                for (i, r) in results.into_iter().enumerate() {
                    out[start + i] = Some(r);
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

async fn eval_batch(
    batch: &[(String, ExprHost)],
    permits: &Semaphore,
    opts: &BuildOptions,
) -> Vec<EvalResult> {
    let names: Vec<String> = batch.iter().map(|(n, _)| n.clone()).collect();
    opts.emit(BuildEvent::EvalStarted {
        hosts: names.clone(),
    });
    let whole = {
        let _permit = permits.acquire().await.expect("semaphore is never closed");
        eval_once(batch, opts).await
    };
    let results = match whole {
        Ok(list) => list.into_iter().map(Ok).collect(),
        Err(e) if batch.len() == 1 => vec![Err(e)],
        Err(_) => {
            // One host's error (a syntax error, a missing attribute) fails the whole process:
            // evaluate each host alone to find which, with its own error text.
            opts.emit(BuildEvent::EvalBatchFailed {
                hosts: names.clone(),
            });
            let mut results = Vec::with_capacity(batch.len());
            for host in batch {
                let _permit = permits.acquire().await.expect("semaphore is never closed");
                results.push(
                    eval_once(std::slice::from_ref(host), opts)
                        .await
                        .map(|mut v| v.remove(0)),
                );
            }
            results
        }
    };
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

/// One `nix-instantiate --eval` of a batch.
async fn eval_once(
    batch: &[(String, ExprHost)],
    opts: &BuildOptions,
) -> Result<Vec<Evaluated>, BuildError> {
    let exprs: Vec<ExprHost> = batch.iter().map(|(_, h)| h.clone()).collect();
    let args = vec![
        "--eval".to_owned(),
        "--strict".to_owned(),
        "--json".to_owned(),
        // Instantiate the derivations (write the .drv files) while evaluating.
        "--read-write-mode".to_owned(),
        "-E".to_owned(),
        batch_expression(&exprs),
    ];
    let out = nix::run("nix-instantiate", &args, &opts.nix_env).await?;
    if !out.success {
        return Err(BuildError::Eval {
            stderr: nix::excerpt(&out.stderr),
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
