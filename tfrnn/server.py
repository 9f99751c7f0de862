"""``tfrnn serve``: trained models over HTTP, following TensorFlow Serving's REST API, and a
page to try them in a browser.

- ``GET /v1/models/NAME``: the model's status (``model_version_status``, as TF Serving).
- ``GET /v1/models/NAME/metadata``: its facts (cell, size, perplexity, vocabulary).
- ``POST /v1/models/NAME:predict``: ``{"instances": [...]}`` (row format: each instance a
  prompt string or ``{"prompt", "num_chars", "temperature", "top_k", "seed"}``) gives
  ``{"predictions": [{"text", "continuation"}, ...]}``; ``{"inputs": {"prompt": [...],
  ...}}`` (columnar format) gives ``{"outputs": {"text": [...], "continuation": [...]}}``.
  ``"signature_name": "score"`` scores the prompts instead (``cross_entropy``,
  ``perplexity``, ``characters``).
- ``GET /v1/models``: the models served (not in TF Serving; the page uses it).
- ``GET /``: the page.

Every bad request gets a 4xx with ``{"error": "..."}``: a body over ``MAX_BODY`` bytes (413),
not JSON or of the wrong shape, a negative or too large length, a prompt over
``MAX_PROMPT`` characters, too many instances (400), an unknown model (404). At most
``concurrency`` generations run at once; a request that waits longer than ``QUEUE_SECONDS``
for its turn gets a 503. Built on FastAPI and uvicorn; models are the run folders'
SavedModels.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request  # at module level: FastAPI reads the endpoint's annotation

MAX_BODY = 64 * 1024
MAX_INSTANCES = 32
MAX_PROMPT = 4_000
MAX_CHARS = 2_000
QUEUE_SECONDS = 30.0
PAGE = Path(__file__).with_name("page.html")


class BadRequest(Exception):
    """A request tfrnn answers with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Served:
    """One served model: its SavedModel, vocabulary and facts."""

    name: str
    loaded: object
    facts: dict


def load_models(run_dirs: list[Path]) -> dict[str, Served]:
    """Each run folder's SavedModel under the folder's name (one-line errors for bad ones)."""
    from tfrnn import serving
    from tfrnn.errors import TfrnnError
    from tfrnn.rundir import read_metrics

    models: dict[str, Served] = {}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        name = run_dir.name
        if name in models:
            raise TfrnnError(f"two models named {name}: serve folders with different names")
        loaded = serving.load(run_dir)
        vocab = serving.vocab_of(loaded)
        try:
            metrics = read_metrics(run_dir)
        except TfrnnError:
            metrics = {"config": {}}
        config = metrics.get("config", {})
        perplexity = metrics.get("test_perplexity") or metrics.get("best_val_perplexity")
        models[name] = Served(
            name,
            loaded,
            {
                "name": name,
                "cell": config.get("cell"),
                "units": config.get("units"),
                "layers": config.get("layers"),
                "preset": config.get("preset"),
                "parameters": metrics.get("parameters", {}).get("total"),
                "perplexity": perplexity,
                "bits_per_character": math.log2(perplexity) if perplexity else None,
                "vocabulary": vocab.kind,
                "vocabulary_size": len(vocab),
            },
        )
    return models


def _int(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer in {low}..{high:,}, got {json.dumps(value)}")
    return value


def _float(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise BadRequest(f"{name} must be a number in {low:g}..{high:g}, got {json.dumps(value)}")
    return float(value)


def _prompt(value) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"a prompt must be a string, got {json.dumps(value)[:40]}")
    if len(value) > MAX_PROMPT:
        raise BadRequest(f"a prompt may hold at most {MAX_PROMPT:,} characters, got {len(value):,}")
    return value


OPTIONS = {"num_chars": 100, "temperature": 0.0, "top_k": 0, "seed": 0}


def parse_predict(body: bytes) -> tuple[str, list[str], dict, bool]:
    """(signature, prompts, options, columnar) of a predict body, or ``BadRequest``."""
    if len(body) > MAX_BODY:
        raise BadRequest(f"the request body may hold at most {MAX_BODY:,} bytes", 413)
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(request, dict):
        raise BadRequest('the request body must be a JSON object with "instances" or "inputs"')
    signature = request.get("signature_name", "generate")
    if signature not in ("generate", "serving_default", "score"):
        raise BadRequest(f"unknown signature_name {json.dumps(signature)[:40]}: generate or score")
    if ("instances" in request) == ("inputs" in request):
        raise BadRequest('give exactly one of "instances" (rows) or "inputs" (columns)')
    options = dict(OPTIONS)
    if "instances" in request:
        rows = request["instances"]
        if not isinstance(rows, list) or not rows:
            raise BadRequest('"instances" must be a non-empty list')
        prompts, per_row = [], []
        for row in rows:
            if isinstance(row, dict):
                unknown = set(row) - {"prompt", *OPTIONS}
                if unknown:
                    raise BadRequest(f"unknown field(s) in an instance: {', '.join(sorted(unknown))[:80]}")
                prompts.append(_prompt(row.get("prompt", "")))
                per_row.append({k: row[k] for k in OPTIONS if k in row})
            else:
                prompts.append(_prompt(row))
                per_row.append({})
        if any(r != per_row[0] for r in per_row):  # one call generates a batch with one setting
            raise BadRequest(
                "every instance of a request must use the same num_chars, temperature, top_k and seed"
            )
        options.update(per_row[0])
        columnar = False
    else:
        inputs = request["inputs"]
        if isinstance(inputs, (str, list)):
            inputs = {"prompt": inputs}
        if not isinstance(inputs, dict) or "prompt" not in inputs:
            raise BadRequest('"inputs" must be a prompt, a list of prompts, or an object with "prompt"')
        unknown = set(inputs) - {"prompt", *OPTIONS}
        if unknown:
            raise BadRequest(f"unknown input(s): {', '.join(sorted(unknown))[:80]}")
        given = inputs["prompt"]
        prompts = [_prompt(p) for p in (given if isinstance(given, list) else [given])]
        if not prompts:
            raise BadRequest('"prompt" must hold at least one prompt')
        options.update({k: inputs[k] for k in OPTIONS if k in inputs})
        columnar = True
    if len(prompts) > MAX_INSTANCES:
        raise BadRequest(f"at most {MAX_INSTANCES} prompts per request, got {len(prompts)}")
    options["num_chars"] = _int(options["num_chars"], "num_chars", 0, MAX_CHARS)
    options["temperature"] = _float(options["temperature"], "temperature", 0.0, 100.0)
    options["top_k"] = _int(options["top_k"], "top_k", 0, 1_000_000)
    options["seed"] = _int(options["seed"], "seed", 0, 2**31 - 1)
    return ("score" if signature == "score" else "generate"), prompts, options, columnar


def run_predict(model: Served, signature: str, prompts: list[str], options: dict) -> list[dict]:
    """The predictions of one request (runs in a worker thread)."""
    from tfrnn import serving

    if signature == "score":
        result = serving.score(model.loaded, prompts)
        keys = ("cross_entropy", "perplexity", "characters")
        return [
            {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in zip(keys, row)}
            for row in zip(*(result[k] for k in keys))
        ]
    out = model.loaded.generate_top_k(
        prompts, options["num_chars"], options["temperature"], options["seed"], options["top_k"]
    )
    texts = [t.decode() for t in out["text"].numpy()]
    continuations = [t.decode() for t in out["continuation"].numpy()]
    return [{"text": t, "continuation": c} for t, c in zip(texts, continuations)]


def make_app(models: dict[str, Served], concurrency: int = 2):
    """The FastAPI application serving ``models``."""
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(title="tfrnn", docs_url=None, redoc_url=None, openapi_url=None)
    slots = asyncio.Semaphore(concurrency)

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def find(name: str) -> Served:
        if name not in models:
            raise BadRequest(f"no model named {name[:80]!r}: served are {', '.join(models)}", 404)
        return models[name]

    @app.exception_handler(BadRequest)
    async def bad_request(_request, exc: BadRequest):
        return error(str(exc), exc.status)

    @app.exception_handler(404)
    async def not_found(_request, _exc):
        return error("no such path: see GET /v1/models", 404)

    @app.exception_handler(405)
    async def wrong_method(_request, _exc):
        return error("method not allowed on this path", 405)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE.read_text(encoding="utf-8")

    @app.get("/v1/models")
    async def list_models():
        return {"models": [m.facts for m in models.values()]}

    @app.get("/v1/models/{name}")
    async def status(name: str):
        find(name)
        ok = {"error_code": "OK", "error_message": ""}
        return {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]}

    @app.get("/v1/models/{name}/metadata")
    async def metadata(name: str):
        model = find(name)
        return {"model_spec": {"name": name, "version": "1"}, "metadata": model.facts}

    @app.post("/v1/models/{target}")
    async def predict(target: str, request: Request):
        name, _, verb = target.partition(":")
        if verb != "predict":
            raise BadRequest(f"unknown method {verb[:40]!r}: use {name}:predict", 404)
        model = find(name)
        body = await request.body()
        signature, prompts, options, columnar = parse_predict(body)
        try:
            await asyncio.wait_for(slots.acquire(), QUEUE_SECONDS)
        except TimeoutError:
            raise BadRequest("the server is busy: try again", 503) from None
        try:
            rows = await run_in_threadpool(run_predict, model, signature, prompts, options)
        finally:
            slots.release()
        if columnar:
            return {"outputs": {k: [r[k] for r in rows] for k in rows[0]}}
        return {"predictions": rows}

    return app


def serve(
    run_dirs: list[Path], host: str = "127.0.0.1", port: int = 8501, concurrency: int = 2, log=print
) -> None:
    """Load the runs and serve them until interrupted."""
    import uvicorn

    models = load_models(run_dirs)
    app = make_app(models, concurrency)
    log(f"serving {', '.join(models)} on http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=64, timeout_keep_alive=5)
