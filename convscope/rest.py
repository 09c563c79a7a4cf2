"""The REST API beside the UI, in the same server: plain HTTP + JSON for scripts and services.

    GET  /api/v1/models               every served model's card, plus the provider it runs on
    POST /api/v1/models               multipart field ``file`` (an .onnx image classifier) [, ``labels``]
                                      -> its id and what was found in it (convscope.user_models)
    POST /api/v1/teach                multipart fields ``images`` (one per image) and ``labels`` (the class of
                                      each, same order) -> a taught model's id and card (convscope.teach)
    POST /api/v1/predict/{model}      multipart field ``image`` [?variant=fp32 | int8 | single_view] [&cam=1]
                                      ({model}: a served model's name, or an uploaded model's id)
                                      -> the answer (convscope.answers.Answer.to_json): label (null
                                         when the in-distribution gate or the card's rule withholds it,
                                         with a reason), out_of_distribution and ood_score, probabilities,
                                         warnings, the notice and operating point, the CAM on request
    GET  /api/v1/docs                 OpenAPI docs (schema at /api/v1/openapi.json)

Errors are JSON ``{"detail": reason}`` with a 4xx status: 404 unknown model, 400 a model that
is not a classifier or an empty upload, 413 too large, 415 not a readable image, 422 an image the
model cannot use (blank canvas, too small). Uploads are read into memory, decoded, and dropped.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from pydantic import BaseModel

from convscope.answers import (
    BadRequest,
    EmptyUpload,
    UnknownModel,
    answer_bytes,
    answer_uploaded,
    find_model,
    read_upload,
)
from convscope.onnx_graph import UnsafeModel
from convscope.preprocess import InputError, TooLarge, Unreadable
from convscope.runtime import DEFAULT_VARIANT, Registry
from convscope.uploads import MAX_MODEL_BYTES, MAX_UPLOAD_BYTES
from convscope.user_models import API_MODELS, open_model

API = "/api/v1"
PRESET_HELP = "imagenet, 0-1, -1-1 or raw (default: raw for uint8 inputs, else imagenet)"
ImageFile = Annotated[UploadFile, File(description="an image file (multipart field 'image')")]


class Prediction(BaseModel):
    """One answer (convscope.answers.Answer.to_json): what the tabs and the named Gradio API say too."""

    model: str
    variant: str  # which file answered: "fp32" (the main file), or a shipped variant: "int8", "single_view"
    # (with no ?variant=, the model's default: INT8 where it ships, convscope.runtime.DEFAULT_PRECISION)
    label: str | None  # the decision under the card's rule; null when withheld (see reason)
    reason: str | None  # why no label was given (not like the training images, or under reject_below)
    probabilities: dict[str, float]  # every class, most probable first
    decision_rule: str  # "argmax", "threshold" (binary, calibrated), "reject_below" or "out_of_distribution"
    # the in-distribution gate (export.gate): true when ood_score is above ood_threshold and so no
    # label is given; null for a model without a gate (an uploaded model)
    out_of_distribution: bool | None = None
    ood_score: float | None = None
    ood_threshold: float | None = None
    warnings: list[str]  # reasons the input may not be what the model was trained on
    latency_ms: float  # decoding, preprocessing and inference on the server
    threshold: float | None = None  # binary models: p(positive) >= threshold names the positive class
    reject_below: float | None = None  # top probability under this: no label
    operating_point_test: dict | None = None  # the card's test-set rates at its decision rule
    not_for_clinical_use: bool | None = None  # X-ray models: always true
    notice: str | None = None
    source_confound_probe: dict | None = None
    cam_png: str | None = None  # with ?cam=1, for graphs with a CAM output: base64 PNG of the decided class


class Echo(BaseModel):
    bytes: int


def upload_bytes(image: UploadFile) -> bytes:
    """The multipart file's bytes, read no further than the cap (the Guard capped the body already)."""
    return image.file.read(MAX_UPLOAD_BYTES + 1)


def http_error(e: Exception) -> HTTPException:
    """The status code each failure of the answer layer deserves."""
    if isinstance(e, UnknownModel):
        return HTTPException(404, str(e))
    if isinstance(e, (BadRequest, EmptyUpload)):
        return HTTPException(400, str(e))
    if isinstance(e, TooLarge):
        return HTTPException(413, str(e))
    if isinstance(e, Unreadable):
        return HTTPException(415, str(e))
    return HTTPException(422, str(e))  # readable, but nothing a model can use (blank canvas, too small)


def build_rest(registry: Registry) -> FastAPI:
    """A FastAPI app with the REST routes; Gradio is mounted on it at "/" (convscope.ui.serve)."""
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
                = DEFAULT_VARIANT,
                cam: Annotated[bool, Query(description="add the class-activation map of the decided class "
                                           "(base64 PNG) for models whose graph has one")] = False) -> Prediction:
        try:
            if (uploaded := API_MODELS.get(model)) is not None:  # a model uploaded to POST /api/v1/models
                return Prediction(**answer_uploaded(uploaded, read_upload(upload_bytes(image))).to_json())
            m = find_model(registry, model, variant)
            return Prediction(**answer_bytes(m, upload_bytes(image), variant, cam=cam).to_json())
        except (UnknownModel, BadRequest, InputError) as e:
            raise http_error(e) from None

    @api.post(f"{API}/models", summary="Upload your own ONNX image classifier; answers its id and what was "
              "found in it. Then POST /api/v1/predict/{id} and the feature_maps call take the id until it expires.",
              responses={400: {"description": "a model refused, with the reason (external data, custom operators, "
                                              "not an image classifier, not ONNX ...)"},
                         413: {"description": "over the size cap"}})
    def upload_model(file: Annotated[UploadFile, File(description="the .onnx file")],
                     labels: Annotated[UploadFile | None, File(description="class names, one per line")] = None,
                     preprocessing: Annotated[str | None, Form(description=PRESET_HELP)] = None,
                     size: Annotated[int | None, Form(description="input side for models whose size is dynamic")]
                     = None) -> dict:
        data = file.file.read(MAX_MODEL_BYTES + 1)
        if len(data) > MAX_MODEL_BYTES:
            raise HTTPException(413, f"The model is larger than {MAX_MODEL_BYTES // 2**20} MB.")
        text = labels.file.read(2**20).decode("utf-8", "replace") if labels is not None else None
        try:
            m = open_model(data, file.filename or "model.onnx", text, preprocessing, size)
        except (UnsafeModel, InputError) as e:
            raise HTTPException(400, str(e)) from None
        return API_MODELS.add(m).summary() | {"expires_in_s": API_MODELS.ttl}

    @api.post(f"{API}/teach", summary="Teach a new classifier from your images (transfer learning on ImageNet "
              "EfficientNet-Lite0, seconds on a CPU); answers its id and card. Then POST /api/v1/predict/{id} "
              "answers with it until it expires.",
              responses={413: {"description": "over the size cap"},
                         422: {"description": "images or classes it cannot learn from, with the reason"}})
    def teach_model(images: Annotated[list[UploadFile], File(description="one part per image file")],
                    labels: Annotated[list[str], Form(description="the class of each image, one field per image, "
                                                                  "in the same order")]) -> dict:
        from convscope import teach

        try:
            if len(images) != len(labels):
                raise teach.TeachError(f"{len(images)} images but {len(labels)} labels: one label per image.")
            items = [(name, teach.squash(read_upload(upload_bytes(f)))) for name, f in zip(labels, images, strict=True)]
            t = teach.teach(items, teach.backbone_of(registry))
        except InputError as e:
            raise http_error(e) from None
        return {"id": API_MODELS.add(t.model).id, "expires_in_s": API_MODELS.ttl, "card": t.card}

    @api.post(f"{API}/echo", include_in_schema=False)
    def echo(image: ImageFile) -> Echo:
        """The benchmark's baseline: the same upload, no decoding, preprocessing or model."""
        return Echo(bytes=len(upload_bytes(image)))

    return api
