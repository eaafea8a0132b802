"""The local compression console (``tools/console.py``): NetsPresso's web GUI, offline.

* :mod:`utils.console.workspace` - every path the console reads or writes, kept inside one
  work directory; uploads with a size limit and pickle refusal;
* :mod:`utils.console.jobs` - one background job at a time, a queue, cancel;
* :mod:`utils.console.catalog` - methods, recommendations, runtimes and quantization options,
  discovered from the compression / deploy modules;
* what each button does, calling the CLI tools' functions: :mod:`utils.console.sources` (the
  picked model: exported module or checkpoint + config), :mod:`utils.console.layers` (the layer
  table: MACs, L2 / GM / NN importance, VBMF ranks), :mod:`utils.console.compress` (preview and
  the compress job), :mod:`utils.console.quantize` (``tools/quantize.py`` and its report) and
  :mod:`utils.console.evaluate` (fp32 / compressed / int8 mIoU and the accuracy-vs-latency chart);
* :mod:`utils.console.app` - the FastAPI routes and the static page (``static/``).

Needs ``requirements-console.txt`` (FastAPI, uvicorn, python-multipart); the rest of the
toolkit does not import this package.
"""
