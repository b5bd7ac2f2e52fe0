use std::process::ExitCode;

fn main() -> ExitCode {
    let env = istio_iptables::process_env();
    match istio_iptables::run(std::env::args_os(), &env, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if matches!(err, istio_iptables::Error::Usage(_)) {
                eprintln!("Error: {err}");
            }
            tracing::error!("{err}");
            ExitCode::from(err.exit_code())
        }
    }
}
