"""One matplotlib set-up for every figure the tools write: the file-only Agg backend, chosen before pyplot loads."""


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
