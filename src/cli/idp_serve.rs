//! `prereg-station idp serve --listen ADDR --state DIR [--tls-dir DIR]`
//! (SPEC §12): the reference fulfillment back end over mutual TLS.

use crate::error::{CliError, CliResult};
use crate::idp::serve::{self, TlsMaterial, CA_CERT, CLIENT_CERT, CLIENT_KEY};
use crate::idp::Idp;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (HTTPS with client certificates).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// IdP state directory (of `idp enroll`): shipments offered, results kept.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// CA, server and station client certificates; made on first start.
    /// Default: STATE/tls.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Extra DNS name or IP address for the server certificate (repeatable;
    /// localhost, 127.0.0.1 and ::1 are always in it). Only used when the
    /// TLS directory is made.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
}

pub fn run(a: Args) -> CliResult {
    let idp = Idp::open(&a.state).map_err(|e| CliError::failed(format!("idp: {e}")))?;
    drop(idp);
    let tls_dir = a.tls_dir.clone().unwrap_or_else(|| a.state.join("tls"));
    let mut hosts = a.hosts.clone();
    if !a.listen.ip().is_unspecified() {
        hosts.push(a.listen.ip().to_string());
    }
    let material = TlsMaterial::load_or_make(&tls_dir, &hosts).map_err(CliError::failed)?;
    let config = material.server_config().map_err(CliError::usage)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::failed)?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|e| CliError::failed(format!("cannot listen on {}: {e}", a.listen)))?;
        let addr = listener.local_addr().map_err(CliError::failed)?;
        errln!(
            "idp serve: https://{addr}/v1/shipments (mutual TLS)\n  CA: {}\n  station client certificate: {} (key {})",
            material.path(CA_CERT).display(),
            material.path(CLIENT_CERT).display(),
            material.path(CLIENT_KEY).display()
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
            let _ = tx.send(());
        });
        serve::accept_loop(listener, config, serve::router(&a.state), rx).await;
        errln!("idp serve: stopped");
        Ok(())
    })
}
