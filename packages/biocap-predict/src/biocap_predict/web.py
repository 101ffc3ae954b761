"""The demo page and its JSON API: upload a photo, get taxa at every rank and the nearest trait
captions.

``create_app`` wraps any loaded ``Predictor`` in a FastAPI app; ``serve`` loads one and runs it with
uvicorn (what ``biocap-predict serve`` calls). The page is plain HTML/CSS/JS from package data, with
no CDN, no web fonts and FastAPI's CDN-backed ``/docs`` turned off, so it works on a closed network.

API (``POST /api/predict`` takes a multipart form):

- ``image``: the photo (any format Pillow reads).
- ``labels``: optional; one label per line. When given, the photo is classified among these labels
  instead of the taxa index (the page's "My labels" mode).
- ``k``: how many answers per rank (or labels) to return, 1-50.
- ``rollup``: optional probability T; the answer's ``rollup`` is then the deepest rank whose best
  taxon has probability >= T (``{"rank", "name", "score"}``, null when no rank reaches T).
- ``prior``: optional CSV text ``rank,name,weight`` (a regional prior, see
  :mod:`biocap_predict.priors`): probabilities are multiplied by the weights and renormalised.

Several ``image`` parts are one observation (photos of one organism): the answer combines them
(the mean of their log-probabilities, renormalised) and lists them under ``photos``.

A file that is not a readable image gets 422 with the decoder's message, a body over the upload
limit 413, and so does a photo of more pixels than ``max_upload_pixels`` (read from its header,
before it is decoded); none of them stops the server. At most ``max_decodes`` uploads are decoded at
a time, so memory stays bounded (each decode holds at most ``max_upload_pixels`` RGB pixels) however
many arrive together.
"""

from __future__ import annotations

import io
import re
import socket
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

try:
    import uvicorn
    from fastapi import FastAPI, File, Form, HTTPException, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.datastructures import Headers
except ImportError as exc:  # the [web] extra is optional: the library and CLI work without it
    raise ImportError(
        f"the demo page needs the web extra ({exc.name} is missing): pip install"
        " 'biocap-predict[web]'"
    ) from exc

import torch
from PIL import Image

from biocap_core.errors import BioCAPError
from biocap_core.imagefiles import ImageFiles
from biocap_core.taxonomy import RANKS
from biocap_predict.priors import Prior

STATIC = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_MAX_UPLOAD_PIXELS = 40_000_000
DEFAULT_MAX_DECODES = 2
DEFAULT_ROLLUP = 0.8
MAX_K = 50
MAX_LABELS = 200
# Pillow names an in-memory upload by its repr ("cannot identify image file <_io.BytesIO object at
# 0x…>"); the file name is already in the message, so the repr is only noise to a user.
_BUFFER_REPR = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>")


class _BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413.

    Starlette's multipart parser spools a file part of any size to disk before the endpoint runs, so
    the limit has to be enforced here: from Content-Length up front when the client sends one, and
    by counting bytes as they arrive when it does not (chunked uploads).
    """

    def __init__(self, app, limit: int, shown_limit: int):
        self.app = app
        self.limit = limit
        self.shown_limit = shown_limit

    def message(self, size: int | None = None) -> str:
        mb = self.shown_limit / 2**20
        got = f"{size / 2**20:.1f} MB; " if size is not None else ""
        return f"The upload is too large ({got}the limit is {mb:g} MB). Choose a smaller photo."

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"detail": self.message(int(length))}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                # FastAPI re-raises an HTTPException raised while it reads the body.
                raise HTTPException(413, self.message())
            return message

        await self.app(scope, counted, send)


#: Row fields that say which photo or observation a row is of, or what it rolls up to: not part of
#: an answer.
_NOT_ANSWER = {
    "file_name",
    "rank",
    "observation",
    "photos",
    "caption",
    "rollup_rank",
    "rollup",
    "rollup_score",
}


def _group_by_rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predictor rows (one per answer, each tagged with its rank) as one list per rank, kingdom
    first, each answer with the ``name`` of its taxon at that rank (for species, the binomial)."""
    by_rank: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        answer = {key: value for key, value in row.items() if key not in _NOT_ANSWER}
        answer["name"] = row[row["rank"]]
        by_rank.setdefault(row["rank"], []).append(answer)
    return [{"rank": rank, "predictions": by_rank[rank]} for rank in RANKS if rank in by_rank]


def _rollup(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The rollup of the rows of one photo (or observation): its rank, name and probability."""
    if not rows or not rows[0].get("rollup_rank"):
        return None
    return {
        "rank": rows[0]["rollup_rank"],
        "name": rows[0]["rollup"],
        "score": rows[0]["rollup_score"],
    }


def _labels(text: str) -> list[str]:
    labels = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not labels:
        raise HTTPException(422, "Type at least one label, one per line.")
    if len(labels) > MAX_LABELS:
        raise HTTPException(422, f"Too many labels ({len(labels)}); the limit is {MAX_LABELS}.")
    return labels


def _check_pixels(name: str, data: bytes, max_pixels: int) -> None:
    """Refuse (413) a photo of more than ``max_pixels`` pixels from the size in its header: a PNG
    of a few hundred kilobytes can hold 11,000 x 11,000 pixels, hundreds of megabytes once decoded.
    Data that is no image passes here; decoding it gives the 422 that names the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # reads the header, not the pixels
                width, height = header.size
    except Image.DecompressionBombError:  # Pillow's own refusal, far above any sensible cap
        width = height = None
    except Exception:  # noqa: BLE001 (PIL raises many types on bad data; the decode names it)
        return
    if width is None or width * height > max_pixels:
        size = (
            f" ({width:,} x {height:,} pixels, {width * height / 1e6:.1f} megapixels)"
            if width
            else ""
        )
        raise HTTPException(
            413,
            f"The photo {name} is too large to process{size}; this server "
            f"takes at most {max_pixels / 1e6:g} megapixels. Scale it down "
            "and try again.",
        )


def _decode(name: str, data: bytes, model) -> torch.Tensor:
    """The upload decoded and cropped for ``model``, as the predictor decodes a file (core's
    :class:`ImageFiles`: JPEGs drafted, the eval transform's resize and crop), to a uint8 tensor the
    predictor takes as it is; 422 when it is not a readable image."""
    _, crop = ImageFiles([data], model)[0]
    if isinstance(crop, str):
        raise HTTPException(422, f"Not a readable image: {name}: {_BUFFER_REPR.sub('', crop)}")
    return crop


def create_app(
    predictor,
    *,
    model_name: str = "",
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
    max_decodes: int = DEFAULT_MAX_DECODES,
    rollup: float = DEFAULT_ROLLUP,
) -> FastAPI:
    """The demo app around a loaded ``predictor`` (anything with ``model``, ``predict``,
    ``nearest_captions``, ``classify``, and an ``index`` with ``len`` and ``has_captions``, as
    ``biocap_predict.Predictor`` has); the page asks for the rollup at ``rollup``."""
    app = FastAPI(
        title="BioCAP predict", docs_url=None, redoc_url=None
    )  # /docs and /redoc load from a CDN
    # One inference at a time: the model is shared, and one batch already uses every core.
    model_lock = threading.Lock()
    # Decodes run beside inference, a few at a time: each holds up to max_upload_pixels RGB pixels.
    decode_slots = threading.BoundedSemaphore(max_decodes)
    max_upload = int(max_upload_mb * 2**20)

    @app.exception_handler(RequestValidationError)
    async def readable_validation_error(request, exc: RequestValidationError):
        """A form field that is missing or malformed, said in one line the page can show."""
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'][1:])) or 'request'}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse({"detail": f"Bad request: {problems}"}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "taxa": len(predictor.index),
            "captions": bool(predictor.index.has_captions),
            "ranks": list(RANKS),
            "max_upload_bytes": max_upload,
            "max_upload_pixels": max_upload_pixels,
            "rollup": rollup,
            "references": getattr(predictor, "references", None) is not None,
        }

    def taxa(uploads, k: int, answers: dict[str, Any]) -> dict[str, Any]:
        with_captions = predictor.index.has_captions
        if len(uploads) == 1:
            rows = predictor.predict(uploads, rank="all", k=k, **answers)
            captions = predictor.nearest_captions(uploads, k=k)[0] if with_captions else []
        else:
            rows = predictor.predict_observations(
                {"upload": uploads}, rank="all", k=k, captions=k if with_captions else 0, **answers
            )
            captions = [
                {"caption": r["caption"], "score": r["score"]}
                for r in rows
                if r["rank"] == "caption"
            ]
            rows = [r for r in rows if r["rank"] != "caption"]
        return {
            "mode": "taxa",
            "taxa": _group_by_rank(rows),
            "captions": captions,
            "rollup": _rollup(rows),
            "references": references(uploads[:1], k),
        }

    def references(uploads, k: int) -> list[dict[str, Any]]:
        """The reference photos of the likeliest species nearest to the (first) photo."""
        if getattr(predictor, "references", None) is None:
            return []
        nearest = predictor.nearest_references(uploads, k=min(k, 6))[0]
        return [
            {"url": f"api/reference/{r['id']}", "species": r["species"], "score": r["score"]}
            for r in nearest
        ]

    @app.get("/api/reference/{ref}", include_in_schema=False)
    def reference(ref: int):
        refs = getattr(predictor, "references", None)
        if refs is None or not 0 <= ref < len(refs.paths) or not Path(refs.paths[ref]).is_file():
            raise HTTPException(404, f"No reference photo {ref}.")
        return FileResponse(refs.paths[ref])

    def custom_labels(upload, labels: list[str], k: int) -> dict[str, Any]:
        rows = predictor.classify(upload, labels=labels, k=min(k, len(labels)))
        return {
            "mode": "labels",
            "labels": [{"label": r["classification"], "score": r["score"]} for r in rows],
        }

    @app.post("/api/predict")
    def predict(
        image: list[UploadFile] = File(...),
        labels: str | None = Form(None),
        k: int = Form(5),
        rollup: float | None = Form(None),
        prior: str | None = Form(None),
    ) -> dict[str, Any]:
        if not 1 <= k <= MAX_K:
            raise HTTPException(422, f"k must be between 1 and {MAX_K}, not {k}.")
        if rollup is not None and not 0 < rollup <= 1:
            raise HTTPException(422, f"rollup must be a probability in (0, 1], not {rollup}.")
        label_list = None if labels is None else _labels(labels)
        if label_list is not None and len(image) > 1:
            raise HTTPException(422, "Custom labels take one photo at a time.")
        uploads = []
        for part in image:
            name = part.filename or "upload"
            data = part.file.read()
            _check_pixels(name, data, max_upload_pixels)
            with decode_slots:  # decoded once for every answer
                uploads.append((name, _decode(name, data, predictor.model)))
        answers = {"rollup": rollup} if rollup is not None else {}
        try:
            if prior:
                answers["prior"] = Prior.read(prior)
            with model_lock:
                result = (
                    taxa(uploads, k, answers)
                    if label_list is None
                    else custom_labels(uploads, label_list, k)
                )
        except BioCAPError as exc:
            raise HTTPException(422, str(exc)) from exc
        photos = {"photos": [n for n, _ in uploads]} if len(uploads) > 1 else {}
        return {"file_name": uploads[0][0], **photos, **result}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # The limit is on the photo; the slack covers the form's other fields and boundaries.
    app.add_middleware(_BodyLimit, limit=max_upload + 64 * 1024, shown_limit=max_upload)
    return app


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; port 0 lets the OS pick a free one, which the caller
    reads back so it can print the real URL (uvicorn alone would report port 0)."""
    try:
        return socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=128
        )
    except OSError as exc:  # port taken, unknown host: the CLI prints a BioCAPError as one line
        raise BioCAPError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve(
    index,
    model: str,
    pretrained: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    device: str = "auto",
    precision: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
    max_decodes: int = DEFAULT_MAX_DECODES,
    rollup: float = DEFAULT_ROLLUP,
) -> None:
    """Load the model and index (``None``: the model's published tree of life, see
    :mod:`biocap_predict.hub`), then serve the demo page until interrupted.

    The line ``BioCAP demo page: http://HOST:PORT/`` goes to stdout once the socket is listening, so
    a script (or a test) that started ``serve --port 0`` can read where to connect.
    """
    from biocap_predict import Predictor
    from biocap_predict.hub import announce_weights, published_for

    def say(message: str) -> None:  # stdout carries only the URL line
        print(message, file=sys.stderr, flush=True)

    tol_files = published_for(model).fetch(say) if index is None else None  # before the model loads
    announce_weights(model, say)
    predictor = Predictor.from_pretrained(
        model, pretrained, index, device=device, precision=precision
    )
    if tol_files is not None:
        index = tol_files.index(predictor.model, fingerprint=predictor.fingerprint, echo=say)
        predictor.use_index(index)
    app = create_app(
        predictor,
        model_name=model,
        max_upload_mb=max_upload_mb,
        max_upload_pixels=max_upload_pixels,
        max_decodes=max_decodes,
        rollup=rollup,
    )
    sock = _listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"BioCAP demo page: http://{shown}:{bound_port}/", flush=True)
    config = uvicorn.Config(
        app, host=bound_host, port=bound_port, log_level="info"
    )  # for its own log lines
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
