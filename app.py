"""ConvScope: `python app.py` serves every model in models/ at http://127.0.0.1:7860.

The same file is the Hugging Face Space entry point. No torch here: ONNX Runtime only.
"""

import os
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

from convscope.runtime import load_registry

# Open the ONNX Runtime sessions (C++, mostly outside the GIL) while `import gradio` (~3 s of
# pure-Python imports) runs on the other core: the first answer comes that much sooner.
_loaded = {}
_loader = threading.Thread(target=lambda: _loaded.setdefault("registry", load_registry()))
_loader.start()

from convscope.app import build_app, launch  # noqa: E402

_loader.join()
demo = build_app(registry=_loaded.get("registry"))  # None if the thread failed: load again, in the open

if __name__ == "__main__":
    launch(demo)
