"""Pydantic schemas of the web API: what `/api/predict` and `/api/model` take and return.

They mirror ``Prediction.to_dict()`` and ``Predictor.info`` so the page, the CLI's
``--json`` and these responses are the same JSON; they exist to validate requests and to
document the API at ``/docs``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MAX_TOP_K = 10  # every digit model has 10 classes; more would only grow the response


class PredictRequest(BaseModel):
    """JSON body of ``POST /api/predict`` (the other form is a multipart ``file``)."""

    image: str = Field(
        description="The image as a data URL: data:image/png;base64,... (PNG, JPEG, GIF, BMP, WebP, TIFF)",
        examples=["data:image/png;base64,iVBORw0KGgo..."],
    )
    include_input: bool = Field(False, description="Return each 28x28 model input as a PNG data URL")
    top_k: int = Field(3, ge=1, le=MAX_TOP_K, description="How many best classes to list per item")


class TopK(BaseModel):
    label: str
    probability: float


class PredictionItem(BaseModel):
    """One recognised digit (or the whole image, for image-classification models)."""

    label: str
    index: int
    probability: float
    probs: list[float] = Field(description="Probability of every class, in the order of /api/model's classes")
    top_k: list[TopK]
    box: list[int] | None = Field(None, description="[x0, y0, x1, y1] in the uploaded image's pixels")
    uncertain: bool = False
    input_image: str | None = Field(None, description="PNG data URL of what the model saw (include_input)")


class PredictResponse(BaseModel):
    source: str | None = None
    status: Literal["ok", "uncertain", "empty", "error"]
    text: str | None = Field(None, description="The number read, the class name, or null when no digit was found")
    items: list[PredictionItem]
    error: str | None = None
    elapsed_ms: float = Field(description="Server time for this request: decoding, waiting for a worker, predicting")


class Limits(BaseModel):
    max_body_bytes: int
    max_pixels: int
    content_types: list[str]


class ModelInfo(BaseModel):
    name: str
    classes: list[str]
    task: Literal["digits", "images"]
    channels: int
    image_size: int
    accuracy: float | None = None
    dataset: str | None = None
    temperature: float | None = None  # set when the probabilities are calibrated (`digitlab export`)
    limits: Limits


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]


class ErrorResponse(BaseModel):
    error: str
