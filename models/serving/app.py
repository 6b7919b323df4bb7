"""The HTTP API (FastAPI): embed, zero-shot classify and search with the model the holder serves.

`create_app` only wires: the holder decides which model serves, `payloads` turns bytes into
model inputs (or a `BadInput` → 422), `scoring` computes, the inference log records each request.
Bad input is always a 4xx with a `detail` message; 5xx means a bug or no model (503).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from enum import Enum
from typing import Annotated, Any

from fastapi import FastAPI, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.serving.holder import ModelHolder
from models.serving.inference_log import InferenceLog, elapsed_ms
from models.serving.payloads import BadInput, PayloadLimits, PreparedInput, decode_base64, prepare_bytes, prepare_text
from models.serving.scoring import ServedModel, embedding_summary, prediction_fields, score_item, search

MAX_SEARCH_K = 100  # hits one search may return


class Modality(str, Enum):
    image = "image"
    audio = "audio"
    text = "text"
    depth = "depth"
    thermal = "thermal"
    imu = "imu"


class Item(BaseModel):
    """One item: `text` for modality text, `data_base64` (the file's bytes) for the others."""

    model_config = ConfigDict(extra="forbid")
    modality: Modality
    text: str | None = Field(None, description="the text, for modality text")
    data_base64: str | None = Field(None, description="base64 of an image (PNG, JPEG, …), audio (WAV, FLAC, OGG) "
                                                      "or, for depth, thermal and imu, a .npy array file")

    @model_validator(mode="after")
    def _one_payload_for_the_modality(self) -> "Item":
        wanted = "text" if self.modality is Modality.text else "data_base64"
        other = "data_base64" if wanted == "text" else "text"
        if getattr(self, wanted) is None or getattr(self, other) is not None:
            raise ValueError(f"modality {self.modality.value} takes `{wanted}` (and not `{other}`)")
        return self


class Upload(BaseModel):
    """A multipart upload: the file (image, audio, .npy sensor array, or UTF-8 text) and its modality."""

    model_config = ConfigDict(extra="forbid")
    modality: Modality
    file: UploadFile


class SearchUpload(Upload):
    target: Modality = Field(..., description="which ingested items to rank: image, audio, text (captions), …")
    k: int = Field(5, ge=1, le=MAX_SEARCH_K, description="number of hits")


class SearchQuery(Item):
    target: Modality = Field(..., description="which ingested items to rank: image, audio, text (captions), …")
    k: int = Field(5, ge=1, le=MAX_SEARCH_K, description="number of hits")


class Embedding(BaseModel):
    model_version: str
    modality: Modality
    embedding: list[float] = Field(description="unit vector in the shared space")


class Classification(BaseModel):
    model_version: str
    modality: Modality
    label: str = Field(description="the class whose prompt is nearest (a lora-family model: its predicted class)")
    prompt: str = Field(description="the prompt text that stands for that class")
    confidence: float
    scores: dict[str, float] = Field(description="softmax over the task's classes, keyed by class name")


class Hit(BaseModel):
    sample_id: str
    batch_id: str
    score: float = Field(description="cosine similarity")


class SearchResult(BaseModel):
    model_version: str
    modality: Modality
    target: Modality
    hits: list[Hit]


class Health(BaseModel):
    status: str
    model_version: str | None


class ModelInfo(BaseModel):
    name: str
    alias: str
    version: str = Field(description="the version serving now")
    family: str = Field(description="the model family (imagebind: embed, classify, search any modality; lora: "
                                    "classify text; or a plug-in family)")
    endpoints: list[str] = Field(description="the endpoints this model answers (each also as /upload)")
    modalities: list[str] = Field(description="the modalities this model takes (the towers it was trained with)")
    classes: list[str] = Field(description="the task's classes this version answers in, in score order")
    alias_version: str | None = Field(description="where the alias pointed at the last poll")
    loaded_at: float
    embed_dim: int | None = Field(description="width of the shared space; None for a model without embeddings")
    input_spec: dict[str, Any]
    indexed_items: dict[str, int]
    last_error: str | None
    poll_seconds: float


class Detail(BaseModel):
    detail: str


ERRORS = {400: {"model": Detail, "description": "body that cannot be parsed (e.g. not UTF-8 JSON)"},
          413: {"model": Detail, "description": "body over the configured limit"},
          422: {"description": "invalid or undecodable input"},
          503: {"model": Detail, "description": "no model loaded yet"}}


class BodySizeLimit:
    """413 for bodies over `max_bytes`: from Content-Length up front, or counted while a chunked body streams."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_reject) -> None:
        self.app, self.max_bytes, self.on_reject = app, max_bytes, on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(scope, send, int(declared))
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI re-raises HTTPException from body reading as the response
                raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope: Scope, send: Send, size: int) -> None:
        body = f'{{"detail":"request body is {size} bytes; at most {self.max_bytes} accepted"}}'.encode()
        self.on_reject(scope.get("path", ""), size)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(holder: ModelHolder, inference_log: InferenceLog, limits: PayloadLimits, max_body_bytes: int,
               alias: str = "champion") -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        holder.start()
        try:
            yield
        finally:
            holder.stop()
            inference_log.close()

    app = FastAPI(title="flywheel model API", version="1",
                  description=f"Serves the `@{alias}` model version: embed, zero-shot classify (in the task's "
                              "classes) and search every modality the model was trained on in one embedding space.",
                  lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes,
                       on_reject=lambda path, size: inference_log.write(
                           {"endpoint": path, "status": 413, "error": f"body of {size} bytes"}))

    def served_or_503() -> ServedModel:
        served = holder.current()
        if served is None:
            raise HTTPException(503, f"no model loaded: the registry has no @{alias} version yet "
                                     f"({holder.last_error or 'waiting for a promotion'})")
        return served

    def log_rejection(endpoint: str, status: int, error: str, started: float, served: ServedModel | None,
                      modality: str | None) -> None:
        inference_log.write({"endpoint": endpoint, "status": status, "error": error[:500], "latency_ms": elapsed_ms(started),
                             "model_name": served and served.name, "model_version": served and served.version,
                             "modality": modality})

    @app.exception_handler(RequestValidationError)
    async def _log_validation_error(request: Request, exc: RequestValidationError):
        inference_log.write({"endpoint": request.url.path, "status": 422, "error": str(exc.errors())[:500]})
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _log_http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 413:
            inference_log.write({"endpoint": request.url.path, "status": 413, "error": str(exc.detail)})
        return await http_exception_handler(request, exc)

    def run(endpoint: str, modality: Modality, prepare, respond) -> Any:
        """Prepare the payload with the model read once for this request, score it, respond and log."""
        started = time.perf_counter()
        served = served_or_503()
        refusal = served.refusal(endpoint, modality.value)
        if refusal is not None:
            log_rejection(endpoint, 422, refusal, started, served, modality.value)
            raise HTTPException(422, refusal)
        try:
            prepared: PreparedInput = prepare(served)
        except BadInput as err:
            log_rejection(endpoint, 422, str(err), started, served, modality.value)
            raise HTTPException(422, str(err)) from err
        scored = score_item(served, modality.value, prepared.values)
        response, extra = respond(served, scored)
        inference_log.write({"endpoint": endpoint, "status": 200, "model_name": served.name,
                             "model_version": served.version, "modality": modality.value,
                             "latency_ms": elapsed_ms(started), **prepared.features,
                             **(embedding_summary(scored.embedding, scored.raw_norm) if len(scored.embedding) else {}),
                             **prediction_fields(served.task, scored.label, scored.confidence), **extra})
        return response

    def from_item(item: Item):
        def prepare(served: ServedModel) -> PreparedInput:
            if item.modality is Modality.text:
                return prepare_text(item.text, limits, served.serving.prepare_text)
            return prepare_bytes(item.modality.value, decode_base64(item.data_base64), served.spec, limits,
                                 served.serving.prepare_text)
        return prepare

    def from_upload(upload: Upload):
        return lambda served: prepare_bytes(upload.modality.value, upload.file.file.read(), served.spec, limits,
                                            served.serving.prepare_text)

    def embed_response(modality: Modality):
        def respond(served: ServedModel, scored) -> tuple[Embedding, dict]:
            return Embedding(model_version=served.version, modality=modality,
                             embedding=[float(x) for x in scored.embedding]), {}
        return respond

    def classify_response(modality: Modality):
        def respond(served: ServedModel, scored) -> tuple[Classification, dict]:
            task = served.task
            return Classification(model_version=served.version, modality=modality, label=task.name_of(scored.label),
                                  prompt=task.prompt_of(scored.label), confidence=scored.confidence,
                                  scores={name: float(p) for name, p in zip(task.classes, scored.probs)}), {}
        return respond

    def search_response(modality: Modality, target: Modality, k: int):
        def respond(served: ServedModel, scored) -> tuple[SearchResult, dict]:
            hits = search(served.serving.index, scored.embedding, target.value, k)
            top = hits[0] if hits else {}
            return (SearchResult(model_version=served.version, modality=modality, target=target, hits=hits),
                    {"search_target": target.value, "top_sample_id": top.get("sample_id"), "top_score": top.get("score")})
        return respond

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    def health():
        served = holder.current()
        if served is None:
            from fastapi.responses import JSONResponse

            return JSONResponse({"status": "no_model", "model_version": None}, status_code=503)
        return Health(status="ok", model_version=served.version)

    @app.get("/model", response_model=ModelInfo, responses={503: ERRORS[503]})
    def model_info():
        served = served_or_503()
        return ModelInfo(name=served.name, alias=alias, version=served.version, family=served.family,
                         endpoints=list(served.serving.endpoints),
                         modalities=list(served.modalities), classes=list(served.task.classes),
                         alias_version=holder.alias_version, loaded_at=served.loaded_at,
                         embed_dim=served.serving.embed_dim, input_spec=served.spec,
                         indexed_items=served.serving.index.counts(), last_error=holder.last_error,
                         poll_seconds=holder.poll_seconds)

    @app.post("/embed", response_model=Embedding, responses=ERRORS)
    def embed(item: Item):
        """Embed one item (text, or a base64 file of any other modality the model takes) into the shared space."""
        return run("/embed", item.modality, from_item(item), embed_response(item.modality))

    @app.post("/embed/upload", response_model=Embedding, responses=ERRORS)
    def embed_upload(upload: Annotated[Upload, Form()]):
        """Embed an uploaded file (multipart): image, audio, .npy sensor array, or UTF-8 text."""
        return run("/embed/upload", upload.modality, from_upload(upload), embed_response(upload.modality))

    @app.post("/classify", response_model=Classification, responses=ERRORS)
    def classify(item: Item):
        """Zero-shot class of one item: the class whose prompt is nearest, by name, with every class's score."""
        return run("/classify", item.modality, from_item(item), classify_response(item.modality))

    @app.post("/classify/upload", response_model=Classification, responses=ERRORS)
    def classify_upload(upload: Annotated[Upload, Form()]):
        """Zero-shot class of an uploaded file (multipart)."""
        return run("/classify/upload", upload.modality, from_upload(upload), classify_response(upload.modality))

    @app.post("/search", response_model=SearchResult, responses=ERRORS)
    def search_items(query: SearchQuery):
        """The ingested items of modality `target` nearest to the query (text → images, audio → images, …)."""
        return run("/search", query.modality, from_item(query), search_response(query.modality, query.target, query.k))

    @app.post("/search/upload", response_model=SearchResult, responses=ERRORS)
    def search_upload(upload: Annotated[SearchUpload, Form()]):
        """Search with an uploaded file (multipart) as the query."""
        return run("/search/upload", upload.modality, from_upload(upload),
                   search_response(upload.modality, upload.target, upload.k))

    return app
