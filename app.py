"""ConvScope: `python app.py` serves every model in models/ at http://127.0.0.1:7860.

The same file is the Hugging Face Space entry point. No torch here: ONNX Runtime only.
Run as a script, the REST API answers before Gradio is even imported and the Gradio UI joins when it is
built (convscope.server); imported (tests, notebooks), ``demo`` is built here.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

if __name__ == "__main__":
    from convscope.server import launch

    launch()
else:
    import threading

    from convscope.runtime import load_registry

    # Open the ONNX Runtime sessions (C++, mostly outside the GIL) while `import gradio` (seconds
    # of pure-Python imports) runs on the other core.
    _loaded = {}
    _loader = threading.Thread(target=lambda: _loaded.setdefault("registry", load_registry()))
    _loader.start()

    from convscope.ui import build_app

    _loader.join()
    demo = build_app(registry=_loaded.get("registry"))  # None if the thread failed: load again, in the open
