"""Thermodynamic bookkeeping of EBM training (--thermo): work, heat and free energy along training.

Per iteration t, with samples x_t drawn under parameters theta_t:
  E0(t) = E(x_t; theta_t) before the update, E1(t) = E(x_t; theta_{t+1}) after it;
  work W += mean(E1 - E0) (parameters move, samples fixed);
  heat Q += mean E0(t) - mean E1(t-1) (samples move, parameters fixed); dE = W + Q;
  free energy dF by Jarzynski's equality from the per-sample (batch position) accumulated work,
  dF = -log mean_i exp(-W_i), computed stably with logsumexp; dissipation W - dF;
  information I = -Q - (W - dF).
Jarzynski's equality holds for the work W_i, not for dE_i = W_i + Q_i: for chains that start in equilibrium
and move by kernels that keep the current density invariant, it recovers log Z(start) - log Z(end), with a
small variance when the parameter path is slow (tests/test_thermo.py checks it against AIS).
Kept for the marginal energy E(x) and the joint energy E(x, y). Accumulators stay on the device.
"""
import math

import torch

from utils.errors import UserError

KINDS = ("marginal", "joint")
COLUMNS = ["iteration"] + [f"{q}_{k}" for k in KINDS for q in ("W", "Q", "dE", "dF", "dissipation", "I")]


class ThermoRecorder:
    """Accumulates W, Q, dE and the per-sample work; `history` holds one row per iteration."""

    def __init__(self, batch_size, device):
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)
        self.W, self.Q = z(2), z(2)
        self.W_i = z(2, batch_size)
        self.prev_E1 = None  # (2, batch) energies of the previous samples under the current parameters
        self.rows = []

    def record(self, iteration, E0, E1):
        """E0, E1: (2, batch) marginal and joint energies of this iteration's samples before/after the update."""
        E0, E1 = E0.double(), E1.double()
        self.W += (E1 - E0).mean(1)
        self.W_i += E1 - E0
        if self.prev_E1 is not None:
            self.Q += E0.mean(1) - self.prev_E1.mean(1)
        self.prev_E1 = E1
        dE = self.W + self.Q
        dF = jarzynski_free_energy(self.W_i)
        diss = self.W - dF
        info = -self.Q - diss
        per_kind = torch.stack([self.W, self.Q, dE, dF, diss, info], 1)  # (2, 6)
        self.rows.append(torch.cat([torch.tensor([float(iteration)], dtype=torch.float64, device=E0.device),
                                    per_kind.flatten()]))

    def history(self):
        """(iterations x len(COLUMNS)) float64 on the CPU: one host copy for all rows."""
        return torch.stack(self.rows).cpu() if self.rows else torch.zeros(0, len(COLUMNS), dtype=torch.float64)

    def state_dict(self):
        return {"W": self.W, "Q": self.Q, "W_i": self.W_i, "prev_E1": self.prev_E1, "history": self.history()}

    def load_state_dict(self, state):
        if "W_i" not in state:
            raise UserError("this checkpoint's --thermo state was written before dF used the per-sample work; "
                            "start a new --thermo run")
        self.W, self.Q, self.W_i = state["W"].clone(), state["Q"].clone(), state["W_i"].clone()
        self.prev_E1 = None if state["prev_E1"] is None else state["prev_E1"].clone()
        self.rows = [r.to(self.W.device) for r in state["history"]]


def jarzynski_free_energy(work):
    """dF = -log mean exp(-work) over the last dimension (per-sample accumulated work), via logsumexp."""
    return -(torch.logsumexp(-work, dim=-1) - math.log(work.shape[-1]))


def jarzynski_std_error(work):
    """Delta-method standard error of jarzynski_free_energy: std(w) / (sqrt(n) mean(w)), w = exp(-work)."""
    w = torch.exp(-(work - work.min(dim=-1, keepdim=True).values))
    return w.std(dim=-1) / (math.sqrt(work.shape[-1]) * w.mean(dim=-1))


def to_csv(history):
    lines = [",".join(COLUMNS)]
    for row in history.tolist():
        lines.append(",".join([str(int(row[0]))] + [f"{v:.10g}" for v in row[1:]]))
    return "\n".join(lines) + "\n"


@torch.no_grad()
def energies(model, x, y=None):
    """((2, batch) marginal E(x) = -f(x) and joint E(x, y) = -logits[y], y used), in eval mode so that
    measuring leaves BatchNorm statistics alone; without y the predicted class is used."""
    was_training = model.training
    model.eval()
    f, logits = model(x)
    model.train(was_training)
    y = logits.argmax(1) if y is None else y
    return torch.stack([-f, -logits.gather(1, y[:, None]).squeeze(1)]), y
