//! `steward-sim`: simulated Windows devices on the command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use steward_sim::{Credentials, EnrollOptions, HttpsClient, enroll};

#[derive(Parser)]
#[command(name = "steward-sim", version, about = "Plays Windows devices against an MDM server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll one simulated device and save its identity.
    Enroll {
        /// Server base URL, e.g. https://localhost:8443
        #[arg(long, env = "STEWARD_SIM_SERVER")]
        server: String,
        /// PEM file of the CA that signed the server's TLS certificate (Steward: <data_dir>/pki/root-ca.pem).
        #[arg(long)]
        ca: PathBuf,
        /// E-mail the simulated user types.
        #[arg(long, default_value = "user@example.com")]
        email: String,
        /// Enrollment token (or the user's password) for OnPremise authentication.
        #[arg(long, env = "STEWARD_SIM_TOKEN", conflicts_with = "federated_password")]
        token: Option<String>,
        /// Sign in on the server's federated page with this password instead.
        #[arg(long)]
        federated_password: Option<String>,
        /// DeviceID to use (default: random, 32 hex digits like Windows).
        #[arg(long)]
        device_id: Option<String>,
        /// Device name reported at enrollment.
        #[arg(long, default_value = "DESKTOP-SIM0001")]
        device_name: String,
        /// Full (user + device) or Device.
        #[arg(long, default_value = "Full")]
        enrollment_type: String,
        /// Directory to write device.crt, device.key and device.txt into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn pem(label: &str, der: &[u8]) -> String {
    steward_pki::pem_encode(label, der)
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match Cli::parse().command {
        Command::Enroll {
            server,
            ca,
            email,
            token,
            federated_password,
            device_id,
            device_name,
            enrollment_type,
            out,
        } => {
            let ca_pem = std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?;
            let roots: Vec<Vec<u8>> = rustls_pki_types::pem::PemObject::pem_slice_iter(&ca_pem)
                .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.map(|c| c.to_vec()))
                .collect::<Result<_, _>>()
                .with_context(|| format!("{} is not a PEM certificate file", ca.display()))?;
            let credentials = match (token, federated_password) {
                (Some(t), _) => Credentials::Password(t),
                (None, Some(p)) => Credentials::Federated(p),
                (None, None) => anyhow::bail!("give --token (OnPremise) or --federated-password"),
            };
            let mut opts = EnrollOptions::new(server, email, credentials);
            opts.device_id = device_id;
            opts.device_name = device_name;
            opts.enrollment_type = enrollment_type;
            let client = HttpsClient::new(&roots, None)?;
            let device = enroll::enroll(&client, &opts).await?;
            println!("enrolled device {}", device.device_id);
            println!("  management URL: {}", device.management_url);
            println!(
                "  certificate thumbprint: {}",
                steward_pki::sha1_thumbprint(&device.cert_der)
            );
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("device.crt"), pem("CERTIFICATE", &device.cert_der))?;
                std::fs::write(dir.join("device.key"), pem("PRIVATE KEY", &device.key.pkcs8_der()))?;
                std::fs::write(
                    dir.join("device.txt"),
                    format!(
                        "device_id={}\nmanagement_url={}\n",
                        device.device_id, device.management_url
                    ),
                )?;
                println!("  saved to {}", dir.display());
            }
        }
    }
    Ok(())
}
