"""The training loop's pieces: objectives, schedule, streams, the plan, setup, state (checkpoint format), one
step, the divergence guard and reporting. train_maebm.py's train() wires them."""
from utils.training.measure import evaluate_classifier, input_grad_norm
from utils.training.objectives import (CONDITIONAL_OBJECTIVES, OBJECTIVES, JointLoss, contrastive_divergence,
                                       energy_regulariser, px_loss, pyx_loss)
from utils.training.schedule import lr_at
from utils.training.streams import ResumableStream

__all__ = ["CONDITIONAL_OBJECTIVES", "OBJECTIVES", "JointLoss", "ResumableStream", "contrastive_divergence",
           "energy_regulariser", "evaluate_classifier", "input_grad_norm", "lr_at", "px_loss", "pyx_loss"]
