"""PyTorch side of ConvScope: networks, data, the training loop and one recipe per model."""
