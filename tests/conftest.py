"""Shared fixtures: the shipped cards, the real data when present, and the app on a free port."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from convscope.cards import ModelCard, find_cards
from convscope.runtime import MODELS_DIR
from train.datasets import cifar_available, mnist_available, resolve_data_dir

REPO = Path(__file__).resolve().parent.parent
CARDS = [ModelCard.load(p) for p in find_cards(MODELS_DIR)]
DATA_DIR = resolve_data_dir()
NO_MNIST = f"MNIST not found under {DATA_DIR} (set CONVSCOPE_DATA_DIR to a folder with MNIST/raw/*.gz)"
NO_CIFAR = f"CIFAR-10 not found under {DATA_DIR}/cifar10 (set CONVSCOPE_DATA_DIR; see train/datasets.py)"


def card_params(tab: str | None = None) -> list:
    return [pytest.param(c, id=c.name) for c in CARDS if tab is None or c.tab == tab]


@pytest.fixture(scope="session")
def mnist_test():
    if not mnist_available():
        pytest.skip(NO_MNIST)
    from train.datasets import load_mnist

    return load_mnist("test")


@pytest.fixture(scope="session")
def cifar_test():
    if not cifar_available():
        pytest.skip(NO_CIFAR)
    from train.datasets import load_cifar10

    return load_cifar10("test")


def canvas_png(digit28: np.ndarray, path: Path, side: int = 280, rgba: bool = False) -> Path:
    """An MNIST digit drawn large like a canvas: black ink on white (or on transparent)."""
    ink = Image.fromarray(digit28).resize((side, side), Image.Resampling.BILINEAR)
    if rgba:  # what a browser canvas exports: black strokes, alpha = ink, transparent elsewhere
        img = Image.merge("RGBA", [Image.new("L", ink.size, 0)] * 3 + [ink])
    else:
        img = Image.fromarray(255 - np.asarray(ink))
    img.save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_url():
    """The real app (all shipped models, UI + REST, as `python app.py` serves it) on a free port."""
    from convscope.ui import build_app, serve_in_background

    port = free_port()
    server = serve_in_background(build_app(), port)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)
