"""The REST API beside the UI, in the same server: plain HTTP + JSON for scripts and services.

    GET  /api/v1/models               every served model's card, plus the provider it runs on
    POST /api/v1/predict/{model}      multipart field ``image`` [?variant=fp32 | int8 | single_view]
                                      -> {model, variant, label, probabilities, latency_ms}
    GET  /api/v1/docs                 OpenAPI docs (schema at /api/v1/openapi.json)

Errors are JSON ``{"detail": reason}`` with a 4xx status: 404 unknown model, 400 a model that
is not a classifier or an empty upload, 413 too large, 415 not a readable image, 422 an image the
model cannot use (blank canvas, too small). Uploads are read into memory, decoded, and dropped.
"""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from PIL import Image
from pydantic import BaseModel

from convscope.preprocess import InputError, TooLarge, Unreadable, read_image
from convscope.runtime import DEFAULT_VARIANT, Registry
from convscope.uploads import MAX_UPLOAD_BYTES

API = "/api/v1"
ImageFile = Annotated[UploadFile, File(description="an image file (multipart field 'image')")]


class Prediction(BaseModel):
    model: str
    variant: str  # which file answered: "fp32" (the main file), or a shipped variant: "int8", "single_view"
    # (with no ?variant=, the model's default: INT8 where it ships, convscope.runtime.DEFAULT_PRECISION)
    label: str  # the model's decision: for binary X-ray models, at the card's calibrated threshold
    probabilities: dict[str, float]  # every class, most probable first
    latency_ms: float  # decoding, preprocessing and inference on the server


class Echo(BaseModel):
    bytes: int


def read_upload(image: UploadFile) -> bytes:
    data = image.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"The file is larger than {MAX_UPLOAD_BYTES // 2**20} MB.")
    if not data:
        raise HTTPException(400, "The uploaded file is empty.")
    return data


def decode(data: bytes) -> Image.Image | np.ndarray:
    """Bytes -> image (DICOM included), with the status code each failure deserves."""
    try:
        return read_image(data)
    except TooLarge as e:
        raise HTTPException(413, str(e)) from None
    except Unreadable as e:
        raise HTTPException(415, str(e)) from None
    except InputError as e:  # readable, but nothing a model can use (e.g. DICOM without pixels)
        raise HTTPException(422, str(e)) from None


def build_rest(registry: Registry) -> FastAPI:
    """A FastAPI app with the REST routes; Gradio is mounted on it at "/" (convscope.app.serve)."""
    api = FastAPI(title="ConvScope REST API", version="1",
                  description="Every model is an ONNX file served by ONNX Runtime; its card says how it "
                              "was trained and measured.",
                  docs_url=f"{API}/docs", redoc_url=None, openapi_url=f"{API}/openapi.json")

    @api.get(f"{API}/models", summary="The model cards of every served model, with the ONNX Runtime "
             "execution provider each session really got")
    def models() -> list[dict]:
        return [m.card.to_dict() | {"provider": m.provider} for m in registry.models.values()]

    @api.post(f"{API}/predict/{{model}}", summary="Classify an image with one model",
              responses={400: {"description": "not a classifier, or an empty file"},
                         404: {"description": "unknown model"}, 413: {"description": "file or image too large"},
                         415: {"description": "not a readable image"},
                         422: {"description": "an image the model cannot use, e.g. a blank canvas"}})
    def predict(model: str, image: ImageFile,
                variant: Annotated[str, Query(description="default (INT8 where the card ships it, else "
                                              "fp32), fp32 (the main file), or a variant the card ships: "
                                              "int8, single_view (no test-time augmentation)")]
                = DEFAULT_VARIANT) -> Prediction:
        m = registry.models.get(model)
        if m is None:
            raise HTTPException(404, f"Unknown model {model!r}; known: {sorted(registry.models)}.")
        if why := m.variant_error(variant):
            raise HTTPException(400, why)
        if not m.card.output_names("probs"):
            raise HTTPException(400, f"{model} is a feature extractor, not a classifier.")
        data = read_upload(image)
        t = time.perf_counter()
        img = decode(data)
        try:
            x = m.prepare(img)
        except TooLarge as e:
            raise HTTPException(413, str(e)) from None
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        probs = m.probs(x[None], variant)[0]
        order = probs.argsort()[::-1]
        labels = m.card.labels
        return Prediction(model=model, variant=m.resolve(variant), label=labels[m.decide(probs)],
                          probabilities={labels[i]: float(probs[i]) for i in order},
                          latency_ms=(time.perf_counter() - t) * 1e3)

    @api.post(f"{API}/echo", include_in_schema=False)
    def echo(image: ImageFile) -> Echo:
        """The benchmark's baseline: the same upload, no decoding, preprocessing or model."""
        return Echo(bytes=len(read_upload(image)))

    return api
