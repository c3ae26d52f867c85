"""Running a federated run on Flower's Simulation Engine (Ray), as `flwr run` does.

What `hybnn fed --engine simulation` does: a SuperLink in simulation mode on a free loopback port
(its own FLWR_HOME in the run folder, no runtime dependency installation), then `flwr run` of the
same Flower app as the Deployment Engine with the run's settings as `--run-config` and the
federation as `--federation-config`: `num-supernodes` = the run's clients, each simulated client
given `client-resources-num-cpus` = 1 CPU of Ray's `init-args-num-cpus` (the run's threads), so
that as many clients train at once as there are threads. The ServerApp and ClientApp are those of
`hybnn fed` on the other engines; the simulated SuperNodes pass `partition-id` and
`num-partitions` in their node config, as SuperNodes of a deployment do.

Progress, status and teardown are those of the deployment runner (`deployment.Federation`): the
server app's `rounds.jsonl` is followed, the run's final status read with `flwr ls`, and every
process (SuperLink, ServerApp, Ray) is stopped at the end, whatever the exit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.deployment import Federation
from hybnn_cli.fed.flower_setup import flower_bin, wait_port


def federation_config(clients: int, cpus: int) -> str:
    """`flwr run --federation-config` for `clients` simulated SuperNodes sharing `cpus` CPUs."""
    return (f"num-supernodes={clients} client-resources-num-cpus=1 "
            f"init-args-num-cpus={max(1, cpus)}")


class SimulationFederation(Federation):
    """A SuperLink in simulation mode on loopback (no TLS: nothing leaves the machine)."""

    def __init__(self, run_dir: Path, n_nodes: int, start_timeout: float = 60.0):
        super().__init__(run_dir, n_nodes, start_timeout, tls=False)
        # Ray renices its workers by 15 by default: on a busy machine the clients then get
        # almost no CPU while the server waits for them. Keep them at the caller's priority.
        self.env["RAY_worker_niceness"] = "0"

    def start_superlink(self) -> None:
        proc = self.procs.start("superlink", [
            flower_bin("flower-superlink"), "--insecure", "--simulation",
            "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(self.port)])
        wait_port(self.port, self.start_timeout, proc)


def run_simulation(cfg: FedConfig, run_dir: Path, cpus: int,
                   on_round: Callable[[dict], None] | None = None) -> dict:
    """The whole simulated federation: SuperLink, one run of cfg.clients simulated clients on
    `cpus` CPUs; all stopped at the end."""
    with SimulationFederation(run_dir, cfg.clients) as fed:
        fed.start_superlink()
        result = fed.run(cfg, on_round, flwr_args=("--federation-config",
                                                   federation_config(cfg.clients, cpus)))
    result["config"] = cfg.to_dict()
    result["run_dir"] = str(Path(run_dir).resolve())
    return result
