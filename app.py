"""ConvScope: `python app.py` serves every model in models/ at http://127.0.0.1:7860.

The same file is the Hugging Face Space entry point. No torch here: ONNX Runtime only.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

from convscope.app import build_app, launch

demo = build_app()

if __name__ == "__main__":
    launch(demo)
