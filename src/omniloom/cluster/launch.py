"""``omniloom serve --cluster``: join or start a Ray cluster and deploy the application.

``local`` starts Ray in this process with every core (or ``num_cpus``), its metrics exported
for Prometheus on ``metrics_port``; any other address joins that cluster (``ray start --head``
elsewhere, or ``auto``). Ray Serve's proxy listens on the server's host and port. SIGTERM or
SIGINT deletes the application, which drains the replicas, and leaves Ray.
"""

from __future__ import annotations

import signal
import threading

from omniloom.config import Settings

APP_NAME = "omniloom"


def connect(settings: Settings) -> str:
    """Join or start Ray; its address (for ``ray status --address``, or a driver to attach)."""
    import ray

    cluster = settings.cluster
    if cluster.address == "local":
        context = ray.init(
            num_cpus=cluster.num_cpus or None,
            include_dashboard=False,
            _metrics_export_port=cluster.metrics_port,
            log_to_driver=False,
        )
    else:
        context = ray.init(address=cluster.address, log_to_driver=False)
    return context.address_info["gcs_address"]


def deploy(settings: Settings) -> None:
    """Start Serve's proxy on the settings' address and deploy; returns once it is running."""
    from ray import serve

    from omniloom.cluster.deployments import application

    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(application(settings), name=APP_NAME, route_prefix="/", blocking=False)


def serve_cluster(settings: Settings) -> int:
    import ray
    from ray import serve

    print(f"omniloom: Ray at {connect(settings)}", flush=True)
    stopped = threading.Event()  # handlers set after Ray's own, which ray.init installs
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        deploy(settings)
        url = f"http://{settings.host}:{settings.port}/v1"
        print(
            f"omniloom: serving on {url} through Ray Serve ({settings.cluster.address})", flush=True
        )
        stopped.wait()
        serve.delete(APP_NAME)
    finally:
        if settings.cluster.address == "local":
            serve.shutdown()
        ray.shutdown()
    return 0
