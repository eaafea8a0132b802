"""The console's HTTP routes (FastAPI) and the one static page they serve.

Every route answers an expected problem with status 400 and ``{"error": "<one line>"}``, which
the page shows as it is. The console is single-user: it holds one loaded model and its channel
analysis, so previews are instant, while compression runs in the job queue on a fresh load of
the same file, exactly as ``tools/compress.py`` would; so do quantization (``tools/quantize.py``)
and evaluation (``tools/eval.py``'s functions) of a compress run. Each action with a JSON body is
one :class:`Console` method behind the same route shape (:func:`_json_route`); a job action
checks what it can of its request first, so most bad input is a 400 answer, not a failed job.
"""
import contextlib
import logging
import os
import threading

from fastapi import FastAPI, File, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from utils.cli import one_line
from utils.console import compress, evaluate, layers, quantize, sources
from utils.console.catalog import catalog, method_module, quantization, runtimes
from utils.console.jobs import JobQueue
from utils.console.workspace import Workspace, run_body
from utils.errors import ConsoleError, PIDNetError

logger = logging.getLogger(__name__)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
Size = list[int] | None


class ModelRequest(BaseModel):
    model: str
    config: str = ""
    head: str | None = None
    input_size: Size = Field(default=None, min_length=2, max_length=2)
    images: str = ""  # a folder of images: adds the NN (PR_NN) importance column
    num_images: int = Field(default=32, ge=1, le=1024)


class CompressRequest(BaseModel):
    method: str
    recommendation: str = ""
    ratio: float | None = None
    round_to: int = 1
    manual: dict[str, str | float | int] = {}
    input_size: Size = Field(default=None, min_length=2, max_length=2)
    runtime: str = "eager"
    budget: str = ""
    budget_value: float | None = None
    images: str = ""
    num_images: int = Field(default=32, ge=1, le=1024)

    def request(self):
        return compress.Request(self.method, self.recommendation, self.ratio, self.round_to,
                                {k: str(v) for k, v in self.manual.items()}, self.budget, self.budget_value,
                                self.images, self.num_images)


class QuantizeRequest(BaseModel):
    run: str
    calib_dir: str
    precision: str = "int8"
    engine: str = "onnxruntime"
    input_size: Size = Field(default=None, min_length=2, max_length=2)
    min_snr: float | None = None  # --mixed --min-snr: the most sensitive layers stay in float


class EvaluateRequest(BaseModel):
    run: str
    config: str
    dataset_root: str = ""
    runtime: str = "onnxruntime"


class Console:
    """State of one console: the workspace, the job queue and the loaded model."""

    def __init__(self, workspace):
        self.workspace = workspace
        self.jobs = JobQueue()
        self.lock = threading.Lock()
        self.source = None
        self.analysis = None
        self.input_size = None
        self.table = None
        self.images = ("", 0)  # the (folder, count) the table's NN column and PR_NN previews use

    def load(self, body):
        from models.compression.plan import analyse

        source = sources.Source(body.model, body.config or "",
                                sources.head_for(self.workspace, body.model) if body.head is None else body.head)
        images = compress.nn_images(self.workspace, body.images, body.num_images) if body.images else None
        model, _, default_size, _ = sources.load_source(self.workspace, source)
        size = sources.check_input_size(body.input_size or default_size)
        analysis = analyse(model, sources.trace_size_for(size), "cpu", images)
        table = layers.layer_table(analysis, size, images)
        with self.lock:
            self.source, self.analysis, self.input_size, self.table = source, analysis, size, table
            self.images = (body.images, body.num_images) if images else ("", 0)
        return {"source": source.__dict__, **table}

    def loaded(self):
        """``(source, analysis, input size, per-layer MACs)`` of the loaded model, consistently."""
        with self.lock:
            if self.analysis is None:
                raise ConsoleError("no model loaded: pick a model and press Load first")
            macs = {row["name"]: row["macs"] for row in self.table["layers"]}
            return self.source, self.analysis, self.input_size, macs

    def _submit(self, kind, label, fn):
        return self.jobs.submit(kind, label, fn).snapshot()

    @staticmethod
    def _runtime(runtime):
        if runtime not in runtimes():
            raise ConsoleError(f"unknown runtime '{runtime}': use one of {', '.join(runtimes())}")
        return runtime

    def preview(self, body):
        source, analysis, size, macs = self.loaded()
        method_module(body.method)
        if body.input_size and sources.check_input_size(body.input_size) != size:
            raise ConsoleError(f"the table was computed at {size[0]}x{size[1]}: press Load again to change the size")
        if body.method == "PR_NN" and (body.images, body.num_images) != self.images:
            loaded = f"on {self.images[1]} images of {self.images[0]}" if self.images[0] else "without images"
            raise ConsoleError(f"PR_NN's preview ranks filters on the images the table was loaded with ({loaded}): "
                               "pick the image folder and press Load again")
        return compress.preview(analysis, body.request(), size, macs)

    def compress(self, body):
        source, analysis, size, macs = self.loaded()
        runtime = self._runtime(body.runtime)
        request = body.request()
        _, meta = method_module(request.method)
        request.kwargs(meta)
        if request.method == "PR_NN":
            compress.nn_images(self.workspace, request.images, 1)  # no folder / no image: refused now
        if meta["preview"] and not request.budget and request.method != "PR_NN":
            compress.preview(analysis, request, size, macs)  # refuse a bad request now, not in the job
        return self._submit("compress", f"{request.method} on {source.model}",
                            lambda job: compress.run_compress(job, self.workspace, source, request, size, runtime))

    def quantize(self, body):
        options = quantization()
        if options is None or not quantize.quantize_available():
            raise ConsoleError("quantization is not available in this toolkit (no models/deploy/quantize.py)")
        for key, value in (("precisions", body.precision), ("engines", body.engine)):
            if value not in options.get(key, [value]):
                raise ConsoleError(f"unknown {key[:-1]} '{value}': use one of {', '.join(options[key])}")
        if body.min_snr is not None and body.precision != "int8":
            raise ConsoleError("keeping layers in float (a minimum SNR) is for int8: clear the SNR or pick int8")
        run_body(self.workspace, body.run)
        self.workspace.folder(body.calib_dir)
        size = sources.check_input_size(body.input_size or self.loaded()[2])
        return self._submit("quantize", f"{body.precision} of {body.run}",
                            lambda job: quantize.run_quantize(job, self.workspace, body.run, body.calib_dir, size,
                                                              body.precision, body.engine, body.min_snr))

    def evaluate(self, body):
        runtime = self._runtime(body.runtime)
        evaluate.eval_config(self.workspace, body.config, body.dataset_root)  # no val set: refused now
        evaluate.eval_models(self.workspace, body.run)
        return self._submit("evaluate", f"evaluate {body.run}",
                            lambda job: evaluate.run_evaluate(job, self.workspace, body.run, body.config,
                                                              body.dataset_root, runtime))


def _json_route(model, action):
    """A FastAPI endpoint parsing the body as ``model`` and returning ``action(body)``."""
    def route(body: model):
        return action(body)

    route.__name__ = action.__name__
    return route


def create_app(workdir, allow_pickle_uploads=False, max_upload_mb=512):
    """The FastAPI application of a console over ``workdir``; ``app.state.console`` holds its state."""
    workspace = Workspace(workdir, allow_pickle_uploads, max_upload_mb)
    console = Console(workspace)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        console.jobs.close()

    app = FastAPI(title="PIDNet compression console", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.console = console

    @app.exception_handler(PIDNetError)
    async def _expected(_request, exc):
        return JSONResponse({"error": one_line(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return JSONResponse({"error": f"bad request field {where or '?'}: {first.get('msg', 'invalid')}"},
                            status_code=400)

    @app.get("/")
    def index():
        return FileResponse(os.path.join(STATIC, "index.html"))

    @app.get("/api/catalog")
    def get_catalog():
        return {**catalog(), "max_upload_mb": workspace.max_upload_bytes >> 20,
                "allow_pickle_uploads": workspace.allow_pickle_uploads}

    @app.get("/api/files")
    def files():
        listing = workspace.listing()
        listing["configs"] += [{"name": name} for name in sources.builtin_configs()]
        return listing

    @app.post("/api/upload")
    def upload(file: UploadFile = File(...)):
        def check(path, kind):
            if kind == "config":
                from configs.default import load_config

                load_config(path)

        name = workspace.save_upload(file.filename, file.file, check)
        return {"name": name}

    # One JSON body in, the console's answer out: the same shape for every action.
    for path, model, action in (("/api/model", ModelRequest, console.load),
                                ("/api/preview", CompressRequest, console.preview),
                                ("/api/jobs/compress", CompressRequest, console.compress),
                                ("/api/jobs/quantize", QuantizeRequest, console.quantize),
                                ("/api/jobs/evaluate", EvaluateRequest, console.evaluate)):
        app.post(path)(_json_route(model, action))

    @app.get("/api/quantize-report/{name:path}")
    def quantize_report(name: str):
        return quantize.read_report(workspace, name)

    @app.get("/api/jobs")
    def jobs():
        return {"jobs": console.jobs.jobs()}

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str):
        return console.jobs.get(job_id).snapshot()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        return console.jobs.cancel(job_id).snapshot()

    @app.get("/api/download/{name:path}")
    def download(name: str):
        path = workspace.path(name)
        return FileResponse(path, filename=os.path.basename(path))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
