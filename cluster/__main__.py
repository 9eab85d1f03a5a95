"""`python -m cluster ...`: the end-to-end demo and the cluster helpers.

python -m cluster demo [--port 8000] [--json]                          # the whole workflow on this machine
python -m cluster preflight --config FILE [key=value ...] [--address]  # resources + shared storage check
python -m cluster submit [--address URL] -- python -m training ...     # ray job submit + tail + exit code
python -m cluster status [--address URL]                               # nodes, resources, recent jobs
python -m cluster validate [--json]                                    # ray_cluster.yaml + cluster/k8s/*
python -m cluster adapters {list,versions,rollback,prune} ... [--json]  # adapter versions and the served pointer
"""

from __future__ import annotations

import argparse
import sys

from core.cli import add_json_flag, dispatch, emit

SUBCOMMANDS = {
    "demo": "cluster.demo:main",
    "preflight": "cluster.preflight:main",
    "submit": "cluster.submit:submit_main",
    "status": "cluster.submit:status_main",
    "validate": "cluster.__main__:validate_main",
    "adapters": "cluster.adapters_cli:main",
}


def validate_main(argv: list[str] | None = None) -> int:
    """Check the whole deployment: the launcher (Ray's schema), the KubeRay manifests, Serve deploy files
    (Serve's schema) and the GPU training configs against the cluster they are shipped for."""
    from cluster.deployment import validate_deployment
    from cluster.manifests import LAUNCHER, validate_k8s, validate_launcher

    parser = argparse.ArgumentParser(prog="python -m cluster validate", description=validate_main.__doc__)
    parser.add_argument("--launcher", default=str(LAUNCHER), help="Ray cluster launcher YAML")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    from pathlib import Path

    prepared = validate_launcher(Path(args.launcher))
    k8s = validate_k8s(launcher=Path(args.launcher))
    deployment = validate_deployment(prepared)
    result = {
        "launcher": args.launcher,
        "node_types": sorted(prepared["available_node_types"]),
        "k8s": k8s,
        **deployment,
    }
    emit(
        result,
        args.json,
        lambda r: (
            f"ok: {r['launcher']} ({', '.join(r['node_types'])}); "
            f"RayJob {r['k8s']['RayJob']['config']}, RayService {r['k8s']['RayService']['import_path']}; "
            f"Serve files {', '.join(r['serve_deploy'])}; "
            f"GPU training configs {', '.join(t['config'] for t in r['training'] if t['gpu'])}"
        ),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return dispatch("python -m cluster", SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
