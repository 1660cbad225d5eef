"""The ISBI 2012 task's fold ensemble as the served model answers: a membrane probability map per image.

``MembraneSegmenter`` is what ``TASK.served`` returns to the pyfunc model (``track.model_package``): the runs'
whole-slice predictions (``tasks.isbi2012.membranes``, with the flip/rotation views) averaged and cleaned up as the
run's post-processing says (``tasks.isbi2012.membrane_postprocess``), answered as float32 TIFFs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
import tifffile

from nerveseg import names
from nerveseg.inference.images import ImageError, Shape, gray_images
from nerveseg.inference.trained import Decision, TrainedModels, check_runs


class MembraneSegmenter:
    """The ISBI 2012 task's fold ensemble plus its clean-up: a membrane probability map per image.

    The ISBI models are fully convolutional (trained on windows), so each image is predicted at its own
    size; images of one size are predicted together.
    """

    def __init__(self, runs: Sequence[TrainedModels], decision: Decision, *, tta: bool = True) -> None:
        check_runs(runs, "isbi2012")
        self.runs = list(runs)
        self.decision = decision
        self.tta = tta

    def _check_size(self, shape: Shape, name: str) -> None:
        """The U-Net's skips need sides divisible by 2**(depth-1); say so instead of Keras' ValueError."""
        from nerveseg.model.families import family_of

        for run in self.runs:
            family = family_of(run.config)
            factor = family.size_divisor(run.config)
            if shape[0] % factor or shape[1] % factor:
                raise ImageError(
                    f"{name}: is {shape[1]}x{shape[0]}; this ISBI {family.label} needs width and height "
                    f"divisible by {factor}"
                )

    def probabilities(self, images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """(h, w) float32 membrane probabilities in [0, 1] per image, averaged over runs, cleaned up."""
        from nerveseg.tasks.isbi2012.membrane_postprocess import apply_membrane_postprocess
        from nerveseg.tasks.isbi2012.membranes import predict_isbi_ensemble

        gray = gray_images(images)
        for i, image in enumerate(gray):
            self._check_size(image.shape, f"image {i}")
        out: list[np.ndarray | None] = [None] * len(gray)
        for shape in dict.fromkeys(image.shape for image in gray):
            index = [i for i, image in enumerate(gray) if image.shape == shape]
            stack = np.stack([gray[i] for i in index])
            total = np.zeros(stack.shape, np.float64)
            for run in self.runs:
                total += predict_isbi_ensemble(run.config, run.weights_paths, stack, tta=self.tta)
            probs = np.clip(total / len(self.runs), 0.0, 1.0).astype(np.float32)
            for i, prob in zip(index, apply_membrane_postprocess(probs, self.decision.settings), strict=True):
                out[i] = prob
        return [prob for prob in out if prob is not None]

    def answer(self, images: list[np.ndarray], *, return_mask: bool) -> pd.DataFrame:
        """Each membrane probability map as a float32 TIFF (``return_mask`` adds nothing: the map is the answer)."""
        tiffs = []
        for probs in self.probabilities(images):
            buffer = io.BytesIO()
            tifffile.imwrite(buffer, probs.astype(np.float32))
            tiffs.append(buffer.getvalue())
        return pd.DataFrame({names.MEMBRANE_COLUMN: tiffs})
