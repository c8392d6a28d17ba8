"""The engine the routes see in a cluster: each job goes to Ray Serve deployments.

``ServerState`` hands jobs to an engine with ``submit`` and reads its queue gauges; this engine
has the same face. A job's media go to the encoder pool first (one call per span, batched there
across requests; a span already encoded anywhere in the cluster comes from the shared embedding
cache), and their embeddings pass to an engine replica through Ray's object store, never through
this process. The job then runs on the text-only pool or the media pool, with an affinity key
(``affinity_key``) that Ray Serve's multiplexed routing uses to send it to the replica that
holds that key: the same image, or the same conversation's opening, lands where its KV blocks
and encoder outputs are cached. A replica that dies before the job's first event is replaced
by Ray and the job is tried once more; one that dies later fails the job with a 503.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

from omniloom.config import ClusterSettings
from omniloom.engine.grammar import GrammarCompiler
from omniloom.engine.remote import RemoteJobEngine
from omniloom.engine.sequence import Done, Failed, Job
from omniloom.errors import OmniloomError, ServiceUnavailable
from omniloom.models.registry import LoadedModel
from omniloom.processing.prompt import Prompt

log = logging.getLogger(__name__)
_REPLICA_LOST = (RayActorError, ConnectionError)  # the replica died or became unreachable
_CANCEL_POLL_S = 0.05


@dataclass(frozen=True)
class Pools:
    """Handles to the cluster's deployments."""

    encoder: DeploymentHandle
    media: DeploymentHandle
    text: DeploymentHandle


def affinity_key(prompt: Prompt, leading_tokens: int) -> str:
    """The routing key: a prompt with media is keyed by its first item's content (the same
    picture goes where its KV and embeddings are), a text prompt by its leading tokens (a
    conversation's later turns start as its first did)."""
    if prompt.spans:
        return "media:" + prompt.spans[0].item.content_hash[:32]
    head = ",".join(map(str, prompt.token_ids[:leading_tokens]))
    return "text:" + hashlib.sha256(head.encode()).hexdigest()[:32]


class RemoteEngine(RemoteJobEngine):
    def __init__(self, model: LoadedModel, pools: Pools, cluster: ClusterSettings):
        super().__init__()
        self.model = model
        self.pools = pools
        self.cluster = cluster
        self.grammars = GrammarCompiler.for_model(model)

    async def events(self, job: Job):
        for attempt in (1, 2):
            started = False
            try:
                async for event in self._attempt(job):
                    started = True
                    yield event
                return
            except Exception as exc:
                if not _replica_lost(exc):
                    raise
                if started or attempt == 2 or job.cancelled.is_set():
                    raise _lost(exc) from exc
                log.warning("a replica was lost before the job started; retrying once: %s", exc)

    async def _attempt(self, job: Job):
        encoded = self._encode(job.prompt)
        pool = self.pools.media if job.prompt.spans else self.pools.text
        handle = pool.options(stream=True)
        if self.cluster.affinity:
            key = affinity_key(job.prompt, self.cluster.affinity_tokens)
            handle = handle.options(multiplexed_model_id=key)
        keys = [span.key for span in job.prompt.spans]
        stream = handle.generate.remote(job.prompt, job.params, keys, *encoded)
        watcher = asyncio.create_task(_cancel_when(job, stream))
        try:
            async for event in stream:
                yield event
                if isinstance(event, Done | Failed):
                    return
            raise ConnectionError("the engine replica's stream ended before the job was done")
        finally:
            watcher.cancel()

    def _encode(self, prompt: Prompt) -> list[DeploymentResponse]:
        """Each span's ``Encoded`` from the encoder pool, as responses passed on unresolved:
        Ray hands their results to the engine replica straight from the object store."""
        return [self.pools.encoder.encode.remote((span.key, span.item)) for span in prompt.spans]


async def _cancel_when(job: Job, stream: DeploymentResponseGenerator) -> None:
    """Cancel the replica's generation once the client has gone or the deadline has passed."""
    while not job.cancelled.is_set():
        await asyncio.sleep(_CANCEL_POLL_S)
    stream.cancel()


def _replica_lost(exc: BaseException) -> bool:
    """Whether an engine or encoder replica died or became unreachable (an encoder's death
    reaches us as the engine's failure to read its argument, with the death as the cause)."""
    return isinstance(exc, _REPLICA_LOST) or isinstance(getattr(exc, "cause", None), _REPLICA_LOST)


def _lost(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The engine replica serving this request stopped; retry it ({type(exc).__name__}).",
        code="replica_lost",
    )


def portable(error: BaseException) -> OmniloomError:
    """An engine's error in a form that survives pickling between processes (an error class
    whose constructor takes other arguments would not): same status, type, message and code."""
    if not isinstance(error, OmniloomError):
        return OmniloomError(f"The engine failed on this request ({type(error).__name__}).")
    out = OmniloomError(error.message, param=error.param, code=error.code)
    out.status, out.type = error.status, error.type
    out.retry_after = getattr(error, "retry_after", None)
    return out
