"""The model as training's chains saw it, for sampling outside the training step, with its state left untouched."""
import contextlib

import torch


@contextlib.contextmanager
def frozen_model_state(model, train=True):
    """Run the model in train mode (BatchNorm on each batch's statistics, spectral norm's power iteration, ActNorm
    as trained) or eval mode; on exit every parameter and buffer is restored bit for bit (BatchNorm running
    statistics, spectral-norm u/v vectors, ActNorm's data-dependent initialisation) and so is the train/eval flag."""
    was_training = model.training
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train(train)
    try:
        yield model
    finally:
        with torch.no_grad():
            model.load_state_dict(saved)
        model.train(was_training)
